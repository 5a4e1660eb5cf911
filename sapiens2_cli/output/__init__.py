"""Where rows go: the two formats (hdf5/, npy/, npy at a URL: url/), what both writers share
(writer.py) and rest on (rows.py: the row record and fill rule; disk.py: a full disk;
atomic.py: files made whole or not at all; lock.py: one writer per output), how a run opens
its output (opening.py), reading it back (reader.py, features.py, dataset.py), and a split
job's parts and their join (parts.py, merge.py). This package only names what callers use."""

from sapiens2_cli.config.choices import OutputFormat
from sapiens2_cli.output.features import FeatureFile
from sapiens2_cli.output.opening import (
    check_output_path,
    existing_settings,
    infer_format,
    open_writer,
)
from sapiens2_cli.output.reader import open_features
from sapiens2_cli.output.rows import RowBatch
from sapiens2_cli.output.writer import FeatureWriter

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
