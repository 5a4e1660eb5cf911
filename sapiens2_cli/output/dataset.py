"""`FeatureDataset`: an extract output (either format) as a torch Dataset for training.

Values go through the reader's per-row `read`, so whatever it decodes (a later storage
dtype included) reaches training unchanged, and only the rows asked for are read (HDF5
slicing, npy memory maps). Each process opens its own reader on first use: an HDF5 handle
shared across fork, or pickled into a spawned worker, is not safe, so none is ever kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.features import FeatureFile
from sapiens2_cli.output.reader import open_features
from sapiens2_cli.remote import is_url


class FeatureDataset(Dataset):
    """Row i of OUT as `{"features": tensor, "key": str, <column>: tensor, ...}`.

    `columns` names per-row columns to add (original_size, boxes, ...); `dtype` is the
    features' tensor dtype. Rows are those committed when the dataset was made.
    """

    def __init__(
        self,
        path: str | Path,
        columns: Iterable[str] = (),
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.path = path if is_url(str(path)) else Path(path)  # an npy output may be a URL
        self.columns = tuple(columns)
        self.dtype = dtype
        with open_features(self.path) as f:  # checked here, in one line, before any worker
            self._rows = len(f)
            if not self._rows:
                raise _no_rows(self.path, f)
            unknown = [name for name in self.columns if name not in f.columns]
            if unknown:
                raise Sapiens2Error(
                    f"{self.path} has no column {unknown[0]!r}: ask for one of "
                    f"{sorted(f.columns)} (features and key are always given)"
                )
        self._file: FeatureFile | None = None
        self._pid = -1  # the process that opened `_file`

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= i < self._rows:
            raise IndexError(f"row {i} out of range for {self._rows} rows")
        f = self._reader()
        item: dict[str, torch.Tensor | str] = {
            "features": torch.from_numpy(f.read([i])[0]).to(self.dtype),
            "key": f.paths[i],
        }
        for name in self.columns:
            item[name] = torch.tensor(f.column(name)[i])  # a copy: the reader keeps its own
        return item

    def _reader(self) -> FeatureFile:
        """This process's own reader: one inherited through fork belongs to the parent."""
        if self._file is None or self._pid != os.getpid():
            self._file = open_features(self.path)
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        """Pickled (spawned workers) without the reader: the worker opens its own."""
        return {**self.__dict__, "_file": None, "_pid": -1}


def _no_rows(path: Path, f: FeatureFile) -> Sapiens2Error:
    if f.failed:
        key, reason = f.failed[0]
        return Sapiens2Error(
            f"{path} has no rows to read: its {len(f.failed)} items all failed (first: {key}: "
            f"{reason}); see them with open_features(...).failed"
        )
    return Sapiens2Error(f"{path} has no rows yet: run `sapiens2 extract` on it to add some")
