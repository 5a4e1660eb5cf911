"""sapiens2-cli: dense per-patch features from Meta's Sapiens2 backbones.

The Python API in one import::

    from sapiens2_cli import load_backbone, normalize_pixels
"""

from sapiens2_cli.errors import Sapiens2Error
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
