"""Video files as an input kind of extract: each kept frame is an item (PyAV, codecs in the wheel).

Two steps, so a frame's key is known before any pixel is decoded (resume filters keys that
are done; a long video is split into runs that several workers decode):
`VideoSource.expand` probes each video for its kept frames and their keys
(`video_probe`: timestamps, sampling, key syntax), and `VideoReader` decodes a run of them
from one seek (`video_decoder`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sapiens2_cli.inputs.decode import fit
from sapiens2_cli.inputs.items import (
    Failure,
    Item,
    Preprocess,
    Reader,
    Row,
    file_key,
    image_columns,
)
from sapiens2_cli.inputs.sources import Expansion, Source
from sapiens2_cli.inputs.video.decoder import FrameDecoder
from sapiens2_cli.inputs.video.probe import DEFAULT_FPS, VideoError, probe

#: Containers picked up when walking a folder (case-insensitive).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})


@dataclass(frozen=True)
class VideoReader(Reader):
    """Decodes a run of a video's frames (the items' locators) from one seek."""

    #: Frames per decode call at most (the loader also caps it at the batch size): enough
    #: to spread a seek over many frames, few enough to keep a long video from holding a
    #: worker, or its memory, for long.
    chunk_rows = 256
    #: This reader's open video, decoded on by its next run (one reader per source, so
    #: one open video per decode worker).
    decoder: FrameDecoder = field(default_factory=FrameDecoder, compare=False, repr=False)

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        by_index = {item.locator.index: item for item in items}
        frames = [item.locator for item in items]
        for result in self.decoder.decode(items[0].file, frames, _decode_threads()):
            if isinstance(result, str):  # the video broke off: one record for the rest
                yield Failure(file_key(items[0].file), result)
                return
            frame, pixels = result
            item = by_index[frame.index]
            if isinstance(pixels, str):
                yield Failure(item.key, pixels)
                continue
            decoded = fit(Image.fromarray(pixels), prep.size, prep.resize)
            yield Row(item.key, decoded.pixels, {**item.columns, **image_columns(decoded, prep)})


def _decode_threads() -> int:
    """FFmpeg threads for this decode worker: its share of the cores. Many workers are
    already parallel (more threads each would only contend); one worker alone gets them
    all, so a video is not decoded on one core while the rest wait."""
    from torch.utils.data import get_worker_info

    from sapiens2_cli.system import usable_cores

    info = get_worker_info()
    workers = info.num_workers if info is not None else 1
    return max(1, usable_cores() // workers)


class VideoSource(Source):
    """Each video file gives its kept frames, keyed VIDEO#t=SECONDS (see the module doc)."""

    extensions = VIDEO_EXTENSIONS

    def __init__(self, fps: float = DEFAULT_FPS) -> None:
        self.fps = fps  # frames kept per second; 0: every frame
        self._reader = VideoReader()  # every expansion's: one decoder, one open video

    def expand(self, files: Sequence[str]) -> Expansion:
        reader, out = self._reader, Expansion()
        for file in files:
            try:
                found = probe(file, self.fps or None)
            except VideoError as e:
                out.failures.append(Failure(file_key(file), str(e)))
                continue
            for frame in found.frames:
                columns = {
                    "frame_index": np.asarray(frame.index, np.int64),
                    "timestamp": np.asarray(frame.timestamp, np.float64),
                }
                out.items.append(Item(frame.key(file), file, reader, frame, columns))
            if found.damage:
                out.failures.append(Failure(file_key(file), found.damage))
        return out
