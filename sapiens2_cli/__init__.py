"""sapiens2-cli: dense per-patch features from Meta's Sapiens2 backbones.

The Python API in one import::

    from sapiens2_cli import extract, open_features  # whole jobs, as `sapiens2 extract`
    from sapiens2_cli import load_backbone, normalize_pixels  # the model itself
"""

__version__ = "0.1.0"

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

#: The extraction engine, imported when first used (it pulls in the pipeline and writers).
_ENGINE = {
    "extract": "sapiens2_cli.pipeline.job",
    "ExtractOptions": "sapiens2_cli.pipeline.job",
    "Interrupted": "sapiens2_cli.pipeline.extract",
    "Summary": "sapiens2_cli.pipeline.progress",
    "open_features": "sapiens2_cli.writers",
}


def __getattr__(name: str) -> object:
    if name in _ENGINE:
        import importlib

        return getattr(importlib.import_module(_ENGINE[name]), name)
    raise AttributeError(f"module 'sapiens2_cli' has no attribute {name!r}")


__all__ = [
    "ARCHS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "CheckpointInfo",
    "ExtractOptions",
    "Interrupted",
    "Sapiens2Backbone",
    "Sapiens2Config",
    "Sapiens2Error",
    "Summary",
    "__version__",
    "build_backbone",
    "extract",
    "get_config",
    "inspect_checkpoint",
    "load_backbone",
    "normalize_pixels",
    "open_features",
]
