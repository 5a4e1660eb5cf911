"""Peak dense tensor throughput of common NVIDIA GPUs, for model FLOP utilisation (MFU).

Figures are the vendors' datasheet numbers without structured sparsity, in TFLOP/s,
with fp32 accumulation for bf16/fp16 (what PyTorch uses). fp32 is the CUDA-core
figure: PyTorch does not use TF32 for float32 matmuls unless asked to, and bench does
not ask. GPUs not listed (and CPUs) get no MFU rather than a guess.
"""

from __future__ import annotations

import re

from sapiens2_cli.config.choices import Precision

# (pattern on torch.cuda.get_device_name(), bf16, fp16, fp32); first match wins.
_PEAKS: tuple[tuple[str, float | None, float, float], ...] = (
    (r"H200 NVL", 835.5, 835.5, 60.0),
    (r"H200", 989.4, 989.4, 66.9),
    (r"H100 NVL", 835.5, 835.5, 60.0),
    (r"H100 PCIe", 756.5, 756.5, 51.2),
    (r"H100", 989.4, 989.4, 66.9),  # SXM5 ("H100 80GB HBM3")
    (r"A100", 312.0, 312.0, 19.5),
    (r"L40S", 362.05, 362.05, 91.6),
    (r"L40\b", 181.05, 181.05, 90.5),
    (r"L4\b", 121.0, 121.0, 30.3),
    (r"A10\b", 125.0, 125.0, 31.2),
    (r"RTX 4090", 165.2, 165.2, 82.6),
    (r"RTX 3090", 71.0, 71.0, 35.6),
    (r"V100-SXM", None, 125.0, 15.7),
    (r"V100", None, 112.0, 14.0),
    (r"T4\b", None, 65.0, 8.1),
)
_COLUMN = {Precision.BF16: 1, Precision.FP16: 2, Precision.FP32: 3}


def peak_tflops(device_name: str, precision: Precision) -> float | None:
    """Datasheet peak TFLOP/s of this GPU in this precision, or None if unknown."""
    for row in _PEAKS:
        if re.search(row[0], device_name):
            return row[_COLUMN[precision]]
    return None
