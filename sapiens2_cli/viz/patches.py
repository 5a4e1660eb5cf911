"""From one stored feature row to a (h, w, D) grid of patch features, and where the image is.

A row holds every stored layer; `tokens` rows carry h*w patches (after the cls and storage
tokens when `--tokens all`), `map` rows are (D, h, w). Pooled rows (`cls`, `mean`) have no
grid and are refused before any work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sapiens2_cli.errors import Sapiens2Error


@dataclass(frozen=True)
class GridSpec:
    """How to find the patch grid in the rows of one feature file."""

    layer_index: int  # position of the chosen layer along the stored layer axis
    layout: str  # "tokens" or "map"
    grid: tuple[int, int]  # (h, w) patch grid
    image_size: tuple[int, int]  # (H, W) model input the grid covers


def grid_spec(settings: Mapping[str, Any], layer: int | None, source: Path) -> GridSpec:
    """Check that the file holds a patch grid and the chosen layer; say how to read it."""
    tokens = settings.get("tokens")
    if tokens in ("cls", "mean"):
        raise Sapiens2Error(
            f"{source} holds pooled features (--tokens {tokens}) with no patch grid to draw: "
            "extract with --tokens patch or all to visualise them"
        )
    layout = settings.get("layout")
    if layout not in ("tokens", "map"):
        raise Sapiens2Error(f"{source} has an unknown layout {layout!r}: re-extract it")
    layers = [int(x) for x in settings["layers"]]
    if layer is None:
        layer = layers[-1]
    if layer not in layers:
        held = ", ".join(str(x) for x in layers)
        raise Sapiens2Error(f"{source} holds layer(s) {held}, not {layer}: pick one with --layer")
    pool = int(settings.get("pool", 1))  # --pool K: each token covers KxK patches
    h, w = (int(x) // pool for x in settings["grid_size"])
    height, width = (int(x) for x in settings["image_size"])
    return GridSpec(layers.index(layer), layout, (h, w), (height, width))


def patch_grid(row: np.ndarray, spec: GridSpec) -> torch.Tensor:
    """One stored row (n_layers, ...) -> float32 (h, w, D) features of the chosen layer."""
    h, w = spec.grid
    x = torch.from_numpy(np.asarray(row[spec.layer_index], dtype=np.float32))
    if spec.layout == "map":
        if x.shape[1:] != (h, w):
            raise Sapiens2Error(
                f"a feature map of shape {tuple(x.shape)} does not match the grid {h}x{w} "
                "its file declares: re-extract it"
            )
        return x.permute(1, 2, 0)  # (D, h, w) -> (h, w, D)
    if x.shape[0] < h * w:
        raise Sapiens2Error(
            f"{x.shape[0]} tokens per image cannot hold the {h}x{w} grid its file declares: "
            "re-extract it"
        )
    return x[x.shape[0] - h * w :].reshape(h, w, -1)  # prefix tokens (if any) come first


@dataclass(frozen=True)
class Region:
    """Where the image lies on the model input: the content box in pixels and its patches."""

    box: tuple[float, float, float, float]  # (top, left, height, width) in input pixels
    rows: tuple[int, int]  # first and last patch row inside the box
    cols: tuple[int, int]  # first and last patch column inside the box

    def patches(self, grid_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, w, D) -> the (N, D) patches on the image (not letterbox padding) and a bool
        (N,) flag marking the outermost ring of them, usually background."""
        on_image = grid_values[self.rows[0] : self.rows[1] + 1, self.cols[0] : self.cols[1] + 1]
        h, w, d = on_image.shape
        ring = torch.ones(h, w, dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        return on_image.reshape(h * w, d), ring.reshape(h * w)


def image_region(spec: GridSpec, content_box: np.ndarray | None) -> Region:
    """The content box of a letterboxed image (the whole input otherwise) and its patches."""
    height, width = spec.image_size
    h, w = spec.grid
    if content_box is None:
        return Region((0.0, 0.0, float(height), float(width)), (0, h - 1), (0, w - 1))
    top, left, box_h, box_w = (float(v) for v in content_box)
    return Region(
        (top, left, box_h, box_w),
        _centred_inside(top, box_h, height / h, h),
        _centred_inside(left, box_w, width / w, w),
    )


def _centred_inside(start: float, length: float, step: float, count: int) -> tuple[int, int]:
    """First and last patch whose centre falls in [start, start+length); if none does, the
    patch holding the middle of that span."""
    first = max(math.ceil(start / step - 0.5), 0)
    last = min(math.ceil((start + length) / step - 0.5) - 1, count - 1)
    if last < first:
        first = last = min(max(int((start + length / 2) // step), 0), count - 1)
    return first, last
