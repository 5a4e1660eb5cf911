"""Fitting a PCA projection on the rows of an extract output (`sapiens2 pca`), streaming.

Every token of every layer of a row is one D-vector sample. Rows are read a chunk at a
time and only the sums (count, sum x, sum x x^T, in float64, of x less a shift: the first
chunk's mean, so large means do not cancel the variance away) are kept: memory is the
D x D covariance plus one chunk, whatever the size of OUT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sapiens2_cli.config.choices import Layout
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.reduce.projection import Projection

#: Features read per chunk (float32 bytes), unless the caller says otherwise.
CHUNK_BYTES = 64 << 20


def token_vectors(block: np.ndarray, layout: str) -> np.ndarray:
    """Rows as read, (r, L, ...), -> every D-vector they hold, (N, D) float64."""
    block = np.moveaxis(block, Layout(layout).feature_axis, -1)
    return block.reshape(-1, block.shape[-1]).astype(np.float64)


def sample_rows(n: int, rows: int | None) -> np.ndarray:
    """`rows` row indices evenly spaced over 0..n-1 (all of them when None or >= n)."""
    if rows is None or rows >= n:
        return np.arange(n)
    if rows < 1:
        raise Sapiens2Error(f"--rows must be at least 1, not {rows}")
    return np.unique(np.linspace(0, n - 1, rows).round().astype(np.int64))


@dataclass
class Moments:
    """Running count, sum and sum of outer products of shifted samples, in float64."""

    count: int = 0
    shift: np.ndarray | None = None  # (D,)
    total: np.ndarray | None = None  # (D,) sum of x - shift
    outer: np.ndarray | None = None  # (D, D) sum of (x - shift)(x - shift)^T

    def add(self, x: np.ndarray) -> None:
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.outer = np.zeros((len(self.shift), len(self.shift)))
        x = x - self.shift
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    def mean_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The samples' mean and covariance (denominator count - 1, as numpy.cov)."""
        centred = self.total / self.count
        covariance = (self.outer - self.count * np.outer(centred, centred)) / (self.count - 1)
        return self.shift + centred, covariance


class Rows(Protocol):
    """What fitting reads: an open output (`open_features`), as the caller opened it; the
    fit needs nothing else of the output layer, which sits above it."""

    settings: dict
    row_shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def read(self, index: np.ndarray) -> np.ndarray: ...


def fit(source: Rows, k: int, rows: int | None = None, chunk_rows: int | None = None) -> Projection:
    """The k-component PCA of the tokens of `rows` rows of an open output."""
    settings = source.settings
    if settings.get("projection_sha256"):
        raise Sapiens2Error(
            "this output holds projected features already: fit on an output made without --project"
        )
    dim = int(settings["embed_dim"])
    index = sample_rows(len(source), rows)
    per_token = int(np.prod(source.row_shape)) // dim
    if k < 1 or k > dim or k > len(index) * per_token:
        raise Sapiens2Error(
            f"-k {k} must be between 1 and D ({dim}) and at most the number of token samples "
            f"({len(index) * per_token} in {len(index)} rows): choose a smaller -k"
        )
    step = chunk_rows or max(1, CHUNK_BYTES // (4 * int(np.prod(source.row_shape))))
    moments = Moments()
    for start in range(0, len(index), step):
        block = source.read(index[start : start + step])  # token_vectors makes float64
        moments.add(token_vectors(block, settings.get("layout", "tokens")))
    if moments.count < 2:
        raise Sapiens2Error(
            f"a PCA needs at least 2 token samples, and {len(index)} rows hold "
            f"{moments.count}: fit on an output with more rows"
        )
    mean, covariance = moments.mean_covariance()
    total = float(np.trace(covariance))
    if not total > 0 or not np.isfinite(covariance).all():
        raise Sapiens2Error(
            f"the {moments.count} token samples do not vary (total variance {total:.3g}), "
            "so no component is defined: fit on an output of varied images"
        )
    values, vectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(values)[::-1][:k]
    components = vectors[:, order].T  # (k, D)
    largest = components[np.arange(k), np.abs(components).argmax(axis=1)]
    components *= np.where(largest < 0, -1.0, 1.0)[:, None]  # largest-magnitude entry > 0
    metadata = {
        "k": str(k),
        "embed_dim": str(dim),
        "rows": str(len(index)),
        "samples": str(moments.count),
        **{
            key: json.dumps(settings.get(key))
            for key in ("checkpoint_sha256", "arch", "layers", "tokens", "layout")
        },
    }
    return Projection(
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        explained_variance=values[order],
        total_variance=total,
        metadata=metadata,
    )
