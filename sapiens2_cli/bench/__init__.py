"""Honest numbers for a backbone: parameters and FLOPs counted on the meta device, and
forward-pass timing with device synchronisation."""

from sapiens2_cli.bench.flops import ModelCost, count_cost
from sapiens2_cli.bench.peaks import peak_tflops
from sapiens2_cli.bench.timing import Timing, environment, time_forward

__all__ = [
    "ModelCost",
    "Timing",
    "count_cost",
    "environment",
    "peak_tflops",
    "time_forward",
]
