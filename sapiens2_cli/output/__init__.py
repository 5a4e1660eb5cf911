"""Output writers (HDF5, npy shards), the reader, and how a run opens its output
(output/opening.py); this package only names what callers use."""

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.output.base import FeatureWriter, RowBatch
from sapiens2_cli.output.features import FeatureFile
from sapiens2_cli.output.opening import (
    check_output_path,
    existing_settings,
    infer_format,
    open_writer,
)
from sapiens2_cli.output.reader import open_features

__all__ = [
    "FeatureFile",
    "FeatureWriter",
    "OutputFormat",
    "RowBatch",
    "check_output_path",
    "existing_settings",
    "infer_format",
    "open_features",
    "open_writer",
]
