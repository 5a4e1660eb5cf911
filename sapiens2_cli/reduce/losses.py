"""The `reductions` record of an output: which lossy reductions made its rows, each with the
loss it measured on them (docs/format.md, "Reductions"), and int8's dequantization.

The record maps a reduction's name to a dict of its parameters plus `loss` (a dict of
measured numbers, or None where there is nothing to measure). Writers keep the running
sums of int8 and pca up to date with every commit, so a resume continues them and a merge
adds them up.
Another reduction joins by adding its entry in `reductions_for` and, if its loss can be
joined across parts, a function in `_JOIN_LOSS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sapiens2_cli.config.choices import Layout
from sapiens2_cli.errors import Sapiens2Error

if TYPE_CHECKING:
    from sapiens2_cli.reduce.projection import Projection

INT8 = "int8"
POOL = "pool"
PCA = "pca"


def reductions_for(pool: int, dtype: str, projection: Projection | None = None) -> dict[str, dict]:
    """The record a new output made with these settings starts with, in the order the
    reductions apply: pool, then pca, then int8."""
    record: dict[str, dict] = {}
    if pool > 1:
        record[POOL] = {"k": pool, "loss": None}  # a choice, nothing to measure
    if projection is not None:
        record[PCA] = {
            "k": projection.k,
            "sha256": projection.sha256,
            "loss": pca_loss(projection.variance_kept),
        }
    if dtype == INT8:
        record[INT8] = {"norm": "l2", "per": "token", "loss": int8_loss()}
    return record


def int8_loss(tokens: int = 0, error_sum: float = 0.0, error_max: float = 0.0) -> dict:
    """int8's loss: relative errors ||x - q*s||_2 / ||x||_2 of every token written."""
    return {
        "tokens": tokens,
        "relative_error_sum": error_sum,
        "relative_error_max": error_max,
        "relative_error_mean": error_sum / tokens if tokens else 0.0,
    }


def pca_loss(fit: float, kept: float = 0.0, total: float = 0.0) -> dict:
    """pca's loss: the share of variance kept on the fit rows (from the projection file) and
    on the rows written, sum ||y||^2 / sum ||x - mean||^2 over their tokens (None before any)."""
    return {
        "variance_kept_fit": fit,
        "energy_kept_sum": kept,
        "energy_total_sum": total,
        "variance_kept_written": kept / total if total else None,
    }


def add_losses(
    record: dict[str, dict], errors: np.ndarray | None, energy: np.ndarray | None
) -> None:
    """Count a committed batch's int8 per-token relative errors and pca per-row (kept,
    total) energies into `record`."""
    if energy is not None and PCA in record and len(energy):
        loss = record[PCA]["loss"]
        record[PCA]["loss"] = pca_loss(
            loss["variance_kept_fit"],
            loss["energy_kept_sum"] + float(energy[:, 0].sum(dtype=np.float64)),
            loss["energy_total_sum"] + float(energy[:, 1].sum(dtype=np.float64)),
        )
    if errors is None or INT8 not in record or not errors.size:
        return
    loss = record[INT8]["loss"]
    record[INT8]["loss"] = int8_loss(
        loss["tokens"] + errors.size,
        loss["relative_error_sum"] + float(errors.sum(dtype=np.float64)),
        max(loss["relative_error_max"], float(errors.max())),
    )


def _join_int8(losses: Sequence[dict]) -> dict:
    return int8_loss(
        sum(loss["tokens"] for loss in losses),
        sum(loss["relative_error_sum"] for loss in losses),
        max(loss["relative_error_max"] for loss in losses),
    )


def _join_pca(losses: Sequence[dict]) -> dict:
    return pca_loss(
        losses[0]["variance_kept_fit"],
        sum(loss["energy_kept_sum"] for loss in losses),
        sum(loss["energy_total_sum"] for loss in losses),
    )


_JOIN_LOSS: dict[str, Callable[[Sequence[dict]], dict]] = {INT8: _join_int8, PCA: _join_pca}


def without_loss(record: dict[str, dict]) -> dict[str, dict]:
    """What must agree between parts of one output: every reduction's parameters."""
    return {name: {k: v for k, v in r.items() if k != "loss"} for name, r in record.items()}


def join_reductions(parts: Mapping[str, dict[str, dict]]) -> dict:
    """The record of a join of parts (their records by name): one line if they differ."""
    (first_name, first), *_ = ((name, without_loss(r)) for name, r in parts.items())
    for name, record in parts.items():
        if without_loss(record) != first:
            raise Sapiens2Error(
                f"{name} was made with other reductions ({without_loss(record)}) than "
                f"{first_name} ({first}): merge only parts of one extract command"
            )
    joined = {}
    for kind, params in first.items():
        losses = [r[kind]["loss"] for r in parts.values()]
        join = _JOIN_LOSS.get(kind)
        joined[kind] = {**params, "loss": join(losses) if join else losses[0]}
    return joined


def scale_shape(row_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """One row's int8 scales: the row's shape (L, ...) without its D axis."""
    shape, axis = list(row_shape), Layout(layout).feature_axis
    del shape[axis - 1 if axis > 0 else axis]  # a row has no batch axis
    return tuple(shape)


def dequantize(q: np.ndarray, scales: np.ndarray, layout: str) -> np.ndarray:
    """float32 q * scale, each token's scale broadcast over its D values."""
    return q.astype(np.float32) * np.expand_dims(
        scales.astype(np.float32), Layout(layout).feature_axis
    )
