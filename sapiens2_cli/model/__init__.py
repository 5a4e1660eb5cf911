"""The Sapiens2 backbone in pure torch: configs, layers, the model and checkpoint loading.

The configs import eagerly (no torch); everything that needs torch is imported on first
use, so commands that only read the zoo start in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sapiens2_cli.lazy import lazy_names
from sapiens2_cli.model.config import (
    ARCHS,
    PIXEL_MEAN,
    PIXEL_STD,
    Sapiens2Config,
    get_config,
    normalize_arch_name,
)

# ruff: noqa: F401
# These imports are for type checkers and editors only: at run time `_LAZY` imports each
# name on first use, and `__all__` is built from it (so the imports look unused).
if TYPE_CHECKING:
    from sapiens2_cli.model.backbone import Sapiens2Backbone
    from sapiens2_cli.model.build import build_backbone
    from sapiens2_cli.model.checkpoint import CheckpointInfo, inspect_checkpoint
    from sapiens2_cli.model.load import load_backbone
    from sapiens2_cli.model.normalize import normalize_pixels

#: Names that need torch, and the module each lives in.
_LAZY = {
    "Sapiens2Backbone": "sapiens2_cli.model.backbone",
    "build_backbone": "sapiens2_cli.model.build",
    "CheckpointInfo": "sapiens2_cli.model.checkpoint",
    "inspect_checkpoint": "sapiens2_cli.model.checkpoint",
    "load_backbone": "sapiens2_cli.model.load",
    "normalize_pixels": "sapiens2_cli.model.normalize",
}


__all__ = [
    "ARCHS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "Sapiens2Config",
    "get_config",
    "normalize_arch_name",
    *_LAZY,
]
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
