"""A row's input image for `viz --overlay`, read from its key as extract read it.

The key gives the file and the item in it (`items.split_key`, `tar.member_of`). The file
goes through the source extract used for it (inputs/registry.py: a video sampled at OUT's
rate, a tar shard, a Parquet / Arrow file, a photo) and that source's reader reads the item
with the row's key, so a frame, a tar member, a Parquet row and a photo are decoded by the
same code as at extract. A person crop is cut again from its photo with the stored matrix.
(Rows keyed by a Parquet --key-column name no file, so they have no overlay.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from sapiens2_cli.inputs.decode import Decoded, ImageError, read_rgb, resize_to
from sapiens2_cli.inputs.items import (
    Failure,
    Item,
    Preprocess,
    derived_key,
    file_key,
    split_key,
)
from sapiens2_cli.inputs.registry import input_sources
from sapiens2_cli.inputs.sources import Source, source_of
from sapiens2_cli.inputs.tar import member_of


class InputImages:
    """Reads rows' input images; each file's items are listed once per viz run (a video
    is probed once for all its rows)."""

    def __init__(self, root: Path | None, video_fps: float, image_column: str | None = None):
        self.root = root  # relative stored paths are under this; None: the cwd
        self._listed: dict[str, tuple[dict[str, Item], list[Failure]]] = {}
        # extract's sources, set as OUT records; one of each (so one open video) per run
        self._sources = input_sources(video_fps, image_column)

    def path(self, key: str) -> str:
        """Where the file of `key` is looked for (as a string: a tar member's name is kept
        as stored, `./` and all, where Path would rewrite it)."""
        path = split_key(key)[0]
        return path if os.path.isabs(path) or self.root is None else os.path.join(self.root, path)

    def read(
        self,
        key: str,
        size: tuple[int, int],
        affine: np.ndarray | None = None,
        input_size: tuple[int, int] = (0, 0),
    ) -> Decoded:
        """The item of `key` at `size` (H, W), stretched; raises ImageError.

        A person crop (`affine` given) is cut at the model's `input_size`, then scaled."""
        path, fragment = self.path(key), split_key(key)[1]
        if affine is not None:
            from sapiens2_cli.inputs.boxes.crop import warp  # OpenCV only for crops

            image = read_rgb(path)
            crop = Image.fromarray(warp(image, affine, input_size), "RGB")
            return Decoded(np.asarray(resize_to(crop, size[1], size[0])), image.shape[:2], None)
        member = member_of(path)
        file = member[0] if member else path  # a tar member is read through its shard
        key = file_key(path) if fragment is None else derived_key(path, fragment)
        item = self._item(file, source_of(file, self._sources), key)
        row = next(iter(item.reader.read([item], Preprocess(size))))
        if isinstance(row, Failure):
            raise ImageError(row.reason)
        return Decoded(row.pixels, tuple(int(v) for v in row.columns["original_size"]), None)

    def _item(self, file: str, source: Source, key: str) -> Item:
        """The item `source` makes of `file` with this key, as extract made it."""
        if file not in self._listed:
            found = source.expand([file])
            self._listed[file] = ({item.key: item for item in found.items}, found.failures)
        items, failures = self._listed[file]
        if key not in items:
            raise ImageError(failures[0].reason if failures else "not in its file any more")
        return items[key]
