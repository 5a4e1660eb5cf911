"""The storage stage: kept float32 features -> the stored dtype, on the device.

float16 and float32 are a cast (range-checked on the host: `check_range`). int8 is
symmetric quantization per token (docs/format.md): each vector of D values gets the scale
absmax / 127, rounded *up* to float16 (the stored scale), and q = round(x / scale), so
|x - q * scale| <= scale / 2 for every stored value, with no clamping. Each token's relative
error ||x - q * scale||_2 / ||x||_2 (0 for an all-zero token) is computed here, where x is
still at hand, and comes back with the row so the writer can keep running totals.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from sapiens2_cli.config.choices import StorageDtype
from sapiens2_cli.errors import Sapiens2Error

FLOAT16_MAX = float(np.finfo(np.float16).max)
INT8_MAX = 127


class StoredBatch(NamedTuple):
    """One batch in its storage form; `scales` and `errors` only for int8, `energy` only
    with a projection (reduce/apply_projection.py)."""

    features: torch.Tensor  # (B, n_layers, ...) storage dtype, contiguous
    peak: torch.Tensor  # () float32: the largest magnitude kept (NaN/inf if any value is)
    scales: torch.Tensor | None  # features' shape without the D axis, float16
    errors: torch.Tensor | None  # same shape, float32: each token's relative error
    energy: torch.Tensor | None = None  # (B, 2) float64: each row's kept and total energy

    def row_aligned(self) -> dict[str, torch.Tensor]:
        """The per-row tensors by RowBatch field name (the peak is not one)."""
        rows = {"features": self.features, "scales": self.scales, "errors": self.errors}
        rows["energy"] = self.energy
        return {name: t for name, t in rows.items() if t is not None}


def to_storage(features: torch.Tensor, dtype: StorageDtype, dim: int = -1) -> StoredBatch:
    """Float32 (or autocast) features -> their storage form; `dim` is the D axis (what
    int8 quantizes as one vector: 2 for `--layout map`, the last otherwise)."""
    low, high = torch.aminmax(features)  # one pass, no |features| copy
    peak = torch.maximum(-low, high).float()  # ()
    if dtype != StorageDtype.INT8:
        return StoredBatch(features.to(dtype.torch).contiguous(), peak, None, None)
    q, scales, errors = quantize_int8(features.float(), dim)
    return StoredBatch(q, peak, scales, errors)


def quantize_int8(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int8 q, float16 scales, float32 relative errors) of float32 `x` per vector along `dim`."""
    scale = _float16_at_least(x.abs().amax(dim, keepdim=True) / INT8_MAX)
    s = scale.float()
    q = torch.where(s > 0, torch.round(x / s), 0.0).to(torch.int8)
    residual = torch.linalg.vector_norm(x - q.float() * s, dim=dim)
    errors = (residual / torch.linalg.vector_norm(x, dim=dim)).nan_to_num(0.0)  # 0/0: exact
    return q.contiguous(), scale.squeeze(dim).contiguous(), errors.contiguous()


def _float16_at_least(v: torch.Tensor) -> torch.Tensor:
    """The smallest float16 >= each (non-negative) float32 value: a scale rounded down would
    push |x| / scale past 127."""
    h = v.half()
    up = (h.view(torch.int16) + 1).view(torch.float16)  # the next float16 above a positive h
    return torch.where(h.float() < v, up, h)


def check_range(peak: float, dtype: StorageDtype) -> None:
    """Refuse features the storage dtype cannot hold, before anything is written."""
    if not math.isfinite(peak):
        raise Sapiens2Error(
            "the model produced inf or NaN features: use --precision bf16 or --precision fp32"
        )
    reach = {
        StorageDtype.FLOAT16: (FLOAT16_MAX, "float16's range"),
        StorageDtype.INT8: (FLOAT16_MAX * INT8_MAX, "what int8 with float16 scales holds"),
    }
    if dtype in reach and peak > reach[dtype][0]:
        limit, what = reach[dtype]
        raise Sapiens2Error(
            f"features reach {peak:.4g}, beyond {what} ({limit:.6g}): rerun with "
            "--dtype float32 (and --overwrite)"
        )
