"""sapiens2-cli: dense per-patch features from Meta's Sapiens2 backbones.

The Python API in one import::

    from sapiens2_cli import load_backbone, normalize_pixels

Names that need torch are imported on first use, so `import sapiens2_cli` (and the
command line's start-up) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sapiens2_cli.errors import Sapiens2Error

if TYPE_CHECKING:
    from sapiens2_cli.model import (
        ARCHS,
        PIXEL_MEAN,
        PIXEL_STD,
        CheckpointInfo,
        Sapiens2Backbone,
        Sapiens2Config,
        build_backbone,
        get_config,
        inspect_checkpoint,
        load_backbone,
        normalize_pixels,
    )

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "CheckpointInfo",
    "Sapiens2Backbone",
    "Sapiens2Config",
    "Sapiens2Error",
    "__version__",
    "build_backbone",
    "get_config",
    "inspect_checkpoint",
    "load_backbone",
    "normalize_pixels",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sapiens2_cli import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
