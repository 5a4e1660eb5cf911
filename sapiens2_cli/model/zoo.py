"""Each published arch's exact size and cost at its training size, kept as data so that
`sapiens2 archs` answers without importing torch or building a model.

tests/model/test_model_zoo.py recounts every entry on the meta device (bench.count_cost);
change a model's shape and that test names the figures to write here.
"""

from __future__ import annotations

from typing import NamedTuple


class ZooCost(NamedTuple):
    parameters: int  # exact count
    flops_per_image: int  # at config.image_size: FlopCounterMode, 2 per multiply-add


ZOO_COST: dict[str, ZooCost] = {
    "0.1b": ZooCost(113_993_472, 1_051_380_781_056),
    "0.4b": ZooCost(395_450_368, 3_367_446_872_064),
    "0.8b": ZooCost(814_283_520, 6_568_828_108_800),
    "1b": ZooCost(1_455_474_176, 11_295_536_431_104),
    "1b-4k": ZooCost(1_606_588_928, 27_197_191_471_104),
    "5b": ZooCost(5_066_902_976, 36_380_420_689_920),
}
