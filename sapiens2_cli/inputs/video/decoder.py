"""Runs of a video's kept frames -> RGB pictures, with PyAV (FFmpeg's decoders).

A `FrameDecoder` seeks to the keyframe before a run's first frame and decodes forward
(FFmpeg's own threads on), yielding each wanted frame as RGB with the display matrix
(rotation, flips) applied, as EXIF orientation is for photos. It keeps its video open
for its next run, which decodes on from there when it follows closely in the same file:
runs of 8 frames each seeking back and decoding that stretch again cost 5x.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import os
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import numpy as np

from sapiens2_cli.inputs.video.probe import Frame, VideoError, open_video, stream_tag
from sapiens2_cli.remote import is_url
from sapiens2_cli.text import one_line

FrameResult = tuple[Frame, np.ndarray | str]  # pixels, or why this frame has none


class FrameDecoder:
    """Decodes runs of one process's video frames, keeping the last video open between runs.

    Never carried across a fork or a pickle: FFmpeg's decoding threads must not run when a
    process forks (decode workers are forked), since a child can inherit a lock one of them
    held, and hang. So every decoder with a video open closes it before any fork, from a
    hook registered when the first one opens a video.
    """

    def __init__(self) -> None:
        self.cursor: _Cursor | None = None  # the open video, or None

    def __reduce__(self) -> tuple[type[FrameDecoder], tuple[()]]:
        return FrameDecoder, ()  # a copy starts with no video open

    def decode(
        self, path: str, frames: Sequence[Frame], threads: int = 0
    ) -> Iterator[FrameResult | str]:
        """RGB frames (H, W, 3) uint8 for `frames` (consecutive kept frames), never raising.

        Yields (frame, pixels) for each frame decoded, in order; a frame the decoder skipped
        or flagged corrupt gets (frame, reason); if the stream ends or breaks before the last
        wanted frame, one final reason string stands for all the frames not produced.
        `threads` is FFmpeg's thread count (0: it picks from the core count).
        """
        wanted = deque(frames)
        if not wanted:
            return
        try:
            if self.cursor is None or not self.cursor.leads_to(path, wanted[0]):
                self.close()
                self.cursor = _Cursor.at(path, wanted[0], threads)
                _close_decoders_before_forks()
                _open_decoders.add(self)
            cursor = self.cursor
            for pts, picture in cursor.pictures:
                cursor.position = pts
                while wanted and wanted[0].pts < pts:
                    yield wanted.popleft(), "the decoder produced no picture for this frame"
                if not wanted or pts != wanted[0].pts:
                    continue
                frame = wanted.popleft()
                if picture.is_corrupt:
                    yield frame, "corrupt frame (damaged data)"
                else:
                    rgb = picture.to_ndarray(format="rgb24")
                    yield frame, orient(rgb, cursor.matrix(picture), cursor.rotate)
                if not wanted:
                    return
        except (av.FFmpegError, VideoError, OSError, MemoryError) as e:
            self.close()
            if wanted:
                yield f"video decoding failed: {one_line(e)}"
            return
        self.close()  # the stream ended
        if wanted:
            yield (
                f"video ends early (truncated or corrupt): {len(wanted)} frames from "
                f"t={wanted[0].timestamp:.3f} s were not decoded"
            )

    def close(self) -> None:
        """Close the video kept open between `decode` calls, if any."""
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None
            _open_decoders.discard(self)


#: Decoders with a video open: what the fork hook closes.
_open_decoders: weakref.WeakSet[FrameDecoder] = weakref.WeakSet()


@functools.cache
def _close_decoders_before_forks() -> None:
    """Register the fork hook, once, when a first video is opened (not at import)."""
    os.register_at_fork(before=_close_open_decoders)


def _close_open_decoders() -> None:
    """Close every open decoder, and collect: FFmpeg's threads end when their codec is
    freed, which the one picture whose side data was read (`_Cursor.matrix`) delays until
    the garbage collector breaks its reference cycle."""
    if _open_decoders:
        for decoder in list(_open_decoders):
            decoder.close()
        gc.collect()


class _Cursor:
    """An open video decoding forward, picture by picture, in presentation order."""

    #: A next run starting at most this far (seconds) past the last picture decodes on
    #: rather than seeking: about one keyframe interval of common video, which is what a
    #: seek would decode again anyway.
    CONTINUE_WITHIN = 2.0

    def __init__(self, path: str, start: int | None, threads: int) -> None:
        self.path, self.stat = path, _stat(path)
        self.container = open_video(path)
        stream = self.container.streams.video[0]
        self.time_base = stream.time_base or Fraction(1, 1)
        self.rotate = _legacy_rotation(stream)
        codec = stream.codec_context
        codec.thread_type = "AUTO"  # frame and slice threads inside FFmpeg
        codec.thread_count = threads  # 0: FFmpeg picks from the core count
        if start is not None:
            self.container.seek(start, stream=stream, backward=True, any_frame=False)
        self._decoding = _pictures(self.container, stream)
        self.pictures: Iterator[tuple[int, av.VideoFrame]] = self._decoding
        self.position: int | None = None  # pts of the last picture taken from `pictures`
        self._matrix: np.ndarray | bool | None = False  # False: not read yet

    @classmethod
    def at(cls, path: str, first: Frame, threads: int) -> _Cursor:
        """A cursor whose next picture is `first` or one before it.

        Containers without a frame index (MPEG-TS, MPEG-PS, FLV) seek by byte estimates and
        can land after the frame asked for (or nowhere): then seek again earlier, 2, 10,
        60 s, then decode from the start; a late run of a long video does not decode
        everything before it.
        """
        targets: list[int | None] = [None]
        if first.index > 0:
            with open_video(path) as container:
                base = container.streams.video[0].time_base or Fraction(1, 1)
            targets = [first.pts - int(back / base) for back in (0, 2, 10, 60)] + [None]
        for target in targets:
            cursor = None
            try:
                cursor = cls(path, target, threads)
                head = next(cursor.pictures, None)
            except av.FFmpegError:
                head = None  # e.g. a seek before the first indexed frame
            if head is not None and (target is None or head[0] <= first.pts):
                cursor.pictures = itertools.chain([head], cursor.pictures)
                return cursor
            if cursor is not None:
                cursor.close()
        raise VideoError("no picture could be decoded")

    def leads_to(self, path: str, first: Frame) -> bool:
        """Whether decoding on from here reaches `first` soon (same file, not past it)."""
        if path != self.path or self.position is None or _stat(path) != self.stat:
            return False
        gap = (first.pts - self.position) * self.time_base
        return 0 < gap <= self.CONTINUE_WITHIN

    def matrix(self, picture: av.VideoFrame) -> np.ndarray | None:
        """The display matrix, read from the first picture converted: it is the stream's,
        which FFmpeg attaches to every picture. Once only, because reading a picture's side
        data ties it in a reference cycle (PyAV), which keeps the picture and the decoder's
        threads alive until the garbage collector runs."""
        if self._matrix is False:
            self._matrix = _display_matrix(picture)
        return self._matrix

    def close(self) -> None:
        """Stop decoding now: FFmpeg's threads end with the codec, freed right here."""
        self._decoding.close()
        self.container.close()


def _pictures(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(pts, picture) in presentation order, from wherever `container` is."""
    codec = stream.codec_context
    for packet in container.demux(stream):
        if packet.is_corrupt:
            continue  # probe did not list its frame; decoding it would only conceal
        try:
            pictures = codec.decode(packet)
        except av.InvalidDataError:
            continue  # one bad packet: the frames after it may still decode
        for picture in pictures:
            pts = picture.pts if picture.pts is not None else picture.dts
            if pts is not None:
                yield pts, picture


def _stat(path: str) -> tuple[int, int]:
    if is_url(path):
        return 0, 0  # an object is replaced, not edited; stat-ing it is a request
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def orient(rgb: np.ndarray, matrix: np.ndarray | None, legacy_rotate: int = 0) -> np.ndarray:
    """Apply a display matrix as `ffmpeg` (autorotate) does: right angles and flips.

    `matrix` is FFmpeg's 3x3 int32 display matrix (16.16 fixed point); without one, the old
    `rotate` tag (clockwise degrees) is used. Other angles than right ones are left as is.
    """
    if matrix is None:
        turns = {90: -1, 180: 2, 270: 1}.get(legacy_rotate % 360, 0)
        return np.ascontiguousarray(np.rot90(rgb, turns))
    m = matrix.astype(np.float64) / 65536
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return rgb
    theta = round(math.degrees(math.atan2(m[1] / scale1, m[0] / scale0)))  # clockwise
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        out = rgb.transpose(1, 0, 2) if m[3] > 0 else np.rot90(rgb, -1)
    elif abs(theta - 180) < 1:
        out = rgb[:, ::-1] if m[0] < 0 else rgb
        out = out[::-1] if m[4] < 0 else out
    elif abs(theta - 270) < 1:
        out = np.rot90(rgb, -1)[::-1] if m[3] < 0 else np.rot90(rgb, 1)
    elif abs(theta) < 1:
        out = rgb[::-1] if m[4] < 0 else rgb
    else:
        out = rgb
    return np.ascontiguousarray(out)


def _display_matrix(picture: av.VideoFrame) -> np.ndarray | None:
    for side in picture.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(side), dtype=np.int32)
    return None


def _legacy_rotation(stream: av.video.stream.VideoStream) -> int:
    """The old `rotate` tag (clockwise degrees), which remuxed phone video still carries."""
    try:
        return int(float(stream_tag(stream, "rotate") or 0))
    except ValueError:
        return 0
