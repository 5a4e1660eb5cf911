"""Every kind of input file, in the order they claim a file: the first source that claims
a file makes its rows (`sources.source_of`). Extract and viz both take their sources from
here, so a new kind of input is wired in once."""

from __future__ import annotations

from sapiens2_cli.inputs.sources import ImageSource, Source
from sapiens2_cli.inputs.tables.parquet import ParquetSource
from sapiens2_cli.inputs.tar import TarSource
from sapiens2_cli.inputs.video.probe import DEFAULT_FPS
from sapiens2_cli.inputs.video.source import VideoSource


def input_sources(
    video_fps: float = DEFAULT_FPS, image_column: str | None = None, key_column: str | None = None
) -> list[Source]:
    """The sources of a run, set as OUT records: videos, tar shards and Parquet / Arrow
    tables by extension, and last photos (which claim any file named)."""
    return [
        VideoSource(video_fps),
        TarSource(),
        ParquetSource(image_column, key_column),
        ImageSource(),
    ]
