"""Checkpoint files for tests: real tiny ones, and header-only zoo-sized ones.

A header-only checkpoint has a valid safetensors header and a sparse file of the right
length, so `inspect_checkpoint` sees a real 1b or 5b file without the disk or the time.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

from sapiens2_cli.model import Sapiens2Config, build_backbone, get_config


def write_header_only_checkpoint(
    path: Path, arch: str | Sapiens2Config, prefix: str = "", extra: dict | None = None
) -> Path:
    """A float32 safetensors file of the arch's exact shapes whose data is all holes."""
    config = get_config(arch) if isinstance(arch, str) else arch
    shapes = {
        prefix + k: list(v.shape) for k, v in build_backbone(config, "meta").state_dict().items()
    }
    shapes.update(extra or {})
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + offset)
    return path


def write_random_checkpoint(
    path: Path, config: Sapiens2Config, prefix: str = "", seed: int = 0, extra: dict | None = None
) -> Path:
    """A real checkpoint with random weights (small configs only)."""
    torch.manual_seed(seed)
    state = {prefix + k: v.contiguous() for k, v in build_backbone(config).state_dict().items()}
    state.update(extra or {})
    save_file(state, str(path))
    return path
