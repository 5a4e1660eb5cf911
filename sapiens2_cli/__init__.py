"""sapiens2-cli: dense per-patch features from Meta's Sapiens2 backbones.

The Python API in one import::

    from sapiens2_cli import extract, open_features  # whole jobs, as `sapiens2 extract`
    from sapiens2_cli import FeatureDataset  # an output read back for training (torch)
    from sapiens2_cli import load_backbone, normalize_pixels  # the model itself

Every name but the error is imported on first use, so `import sapiens2_cli` (and the
command line's start-up) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.lazy import lazy_names
from sapiens2_cli.version import __version__

# ruff: noqa: F401
# These imports are for type checkers and editors only: at run time `_LAZY` imports each
# name on first use, and `__all__` is built from it (so the imports look unused).
if TYPE_CHECKING:
    from sapiens2_cli.config.options import ExtractOptions
    from sapiens2_cli.engine.progress import ProgressStep, Summary
    from sapiens2_cli.engine.runner import Interrupted
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
    from sapiens2_cli.output import open_features
    from sapiens2_cli.output.dataset import FeatureDataset
    from sapiens2_cli.scaleout.launch import extract

#: Where each name lives; `extract` pulls in the engine, the inputs and the output writers.
_LAZY = {
    **dict.fromkeys(
        [
            "ARCHS",
            "PIXEL_MEAN",
            "PIXEL_STD",
            "CheckpointInfo",
            "Sapiens2Backbone",
            "Sapiens2Config",
            "build_backbone",
            "get_config",
            "inspect_checkpoint",
            "load_backbone",
            "normalize_pixels",
        ],
        "sapiens2_cli.model",
    ),
    "extract": "sapiens2_cli.scaleout.launch",
    "ExtractOptions": "sapiens2_cli.config.options",
    "Interrupted": "sapiens2_cli.engine.runner",
    "ProgressStep": "sapiens2_cli.engine.progress",
    "Summary": "sapiens2_cli.engine.progress",
    "open_features": "sapiens2_cli.output",
    "FeatureDataset": "sapiens2_cli.output.dataset",
}


__all__ = ["Sapiens2Error", "__version__", *_LAZY]
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
