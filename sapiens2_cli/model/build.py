"""Random-weight backbones, apart from the package's __init__ so that importing the
configs (`sapiens2 archs`, `--help`) does not import torch."""

from __future__ import annotations

import torch

from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.config import Sapiens2Config, get_config


def build_backbone(
    arch: str | Sapiens2Config,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sapiens2Backbone:
    """A randomly initialised backbone (for benchmarks and tests); `device="meta"` costs
    no memory. Use `load_backbone` for real weights."""
    config = get_config(arch) if isinstance(arch, str) else arch
    return Sapiens2Backbone(config, device=device, dtype=dtype).eval()
