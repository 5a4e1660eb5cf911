"""The model zoo as the published spec gives it (docs/model.md), for the tests on it."""

from __future__ import annotations

from typing import NamedTuple


class ZooEntry(NamedTuple):
    params: int  # exact parameter count
    keys: int  # state-dict keys, rope_embed.periods included
    flops: float  # per image at the training size (FlopCounterMode, 2 per multiply-add)


ZOO = {
    "0.1b": ZooEntry(113_993_472, 210, 1.051e12),
    "0.4b": ZooEntry(395_450_368, 414, 3.367e12),
    "0.8b": ZooEntry(814_283_520, 550, 6.569e12),
    "1b": ZooEntry(1_455_474_176, 686, 11.296e12),
    "1b-4k": ZooEntry(1_606_588_928, 744, 27.197e12),
    "5b": ZooEntry(5_066_902_976, 958, 36.380e12),
}
