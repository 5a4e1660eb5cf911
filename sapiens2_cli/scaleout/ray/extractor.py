"""`FeatureExtractor`: the model stage of `--engine ray` as a building block for pipelines
already in Ray Data, a callable class for `Dataset.map_batches` (docs/api.md, "Ray Data").

It runs exactly what an extract actor runs (DeviceModel: the backbone, pool, projection
and storage dtype), on images given as encoded bytes (decoded as the CLI decodes a file's
bytes) or as decoded (h, w, 3) uint8 arrays (resized as the CLI resizes a photo), so its
features for the same bytes equal the CLI's. A row that cannot be decoded keeps its place:
its `error` holds the reason and its features are NaN (int8: 0, with NaN scales).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from sapiens2_cli.config.choices import ResizeMode
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.errors import Sapiens2Error


class FeatureExtractor:
    """`ds.map_batches(FeatureExtractor, fn_constructor_kwargs={...}, batch_size=...,
    compute=ray.data.ActorPoolStrategy(size=n), num_gpus=1)`: adds `features` (a
    fixed-shape tensor column), `scales` with int8, and `error` to each batch; `column`
    (bytes or arrays) is dropped."""

    def __init__(
        self,
        arch: str | None = None,
        checkpoint: str | Path | None = None,
        size: tuple[int, int] | str | None = None,
        layers: Sequence[int] | str = (-1,),
        tokens: str = "patch",
        layout: str = "tokens",
        pool: int = 1,
        dtype: str = "float16",
        project: str | Path | None = None,
        precision: str = "auto",
        *,
        column: str = "image",
        resize: str = "stretch",
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        import torch

        from sapiens2_cli.config.rules import check_pool
        from sapiens2_cli.engine.device import (
            resolve_device,
            resolve_precision,
            resolve_weights_dtype,
        )
        from sapiens2_cli.engine.forward import DeviceModel
        from sapiens2_cli.model import load_backbone
        from sapiens2_cli.model.backbone import resolve_layers
        from sapiens2_cli.reduce.apply_projection import DeviceProjection
        from sapiens2_cli.reduce.projection import projection_settings
        from sapiens2_cli.weights.resolve import resolve_weights

        opts = ExtractOptions(
            arch=arch, checkpoint=checkpoint, size=size, layers=layers, tokens=tokens,
            layout=layout, pool=pool, dtype=dtype, precision=precision, resize=resize,
            batch_size=batch_size,
        ).with_defaults()  # fmt: skip
        weights = resolve_weights(opts.arch, opts.checkpoint)
        config = weights.info.config
        self.size = tuple(opts.size or config.image_size)
        config.check_image_size(*self.size)
        grid = config.grid_size(*self.size)
        check_pool(opts.pool, grid, self.size)
        self.device = resolve_device(device)
        compute = resolve_precision(opts.precision, self.device)
        opts = replace(
            opts,
            size=self.size,
            layers=resolve_layers(opts.layers, config.num_layers),
            precision=compute,
            weights_dtype=resolve_weights_dtype(opts.weights_dtype, compute),
        )
        model = load_backbone(
            weights.path, weights.arch_flag, device=self.device, dtype=opts.weights_dtype.torch
        )
        projection = None
        if project is not None:
            loaded, _ = projection_settings(Path(project), config.embed_dim, Path.cwd())
            projection = DeviceProjection(loaded, opts.layout, self.device)
        self.model = DeviceModel(model, opts, self.device, grid, projection=projection)
        self.column, self.resize, self.dtype = column, opts.resize, opts.dtype
        self._torch = torch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels, errors = [], []
        for cell in batch[self.column]:
            try:
                pixels.append(self._pixels(cell))
                errors.append("")
            except Sapiens2Error as e:
                pixels.append(np.zeros((*self.size, 3), np.uint8))
                errors.append(str(e))
        made = self.model.submit(self._torch.from_numpy(np.stack(pixels))).rows()
        failed = np.array([bool(e) for e in errors])
        out = {k: v for k, v in batch.items() if k != self.column}
        features = made["features"]
        if failed.any():
            features = features.copy()
            features[failed] = 0 if features.dtype.kind == "i" else np.nan
        out["features"] = features
        if made.get("scales") is not None:
            scales = made["scales"].astype(np.float32)
            scales[failed] = np.nan
            out["scales"] = scales
        out["error"] = np.array(errors, dtype=object)
        return out

    def _pixels(self, cell: object) -> np.ndarray:
        """The model's (H, W, 3) uint8 input from encoded bytes or a decoded array."""
        from PIL import Image

        from sapiens2_cli.inputs.decode import ImageError, decode_image, fit

        try:
            if isinstance(cell, (bytes, bytearray, memoryview)):
                return decode_image(bytes(cell), self.size, ResizeMode(self.resize)).pixels
            array = np.asarray(cell)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise Sapiens2Error(
                    f"an image array must be (h, w, 3) uint8 RGB, not {array.shape} {array.dtype}"
                )
            return fit(Image.fromarray(array), self.size, ResizeMode(self.resize)).pixels
        except ImageError as e:
            raise Sapiens2Error(str(e)) from None
