"""Video files -> frames, with PyAV (FFmpeg's demuxers and decoders, codecs in the wheel).

Two steps, so a frame's key is known before any pixel is decoded (resume filters keys that
are done; a long video is split into chunks that several workers decode):

* `probe` demuxes the packets of the first video stream, without decoding, and lists the
  frames to keep, in presentation order, from their timestamps alone.
* `decode` takes a run of consecutive kept frames, seeks to the keyframe before the first
  and decodes forward (FFmpeg's own threads on), yielding each wanted frame as RGB with
  the display matrix (rotation, flips) applied, as EXIF orientation is for photos. The
  decoder stays open for the process's next run, which decodes on from there when it
  follows closely in the same file.

`VideoSource` and `VideoReader` plug these into extract's item pipeline.

Times: a frame's `timestamp` is its presentation time in seconds from the stream's first
frame (players and `ffmpeg -ss` count from there too). Sampling at F per second keeps, for
each k = 0, 1, ..., the first frame whose timestamp is >= k/F (a frame that is first for
several k is kept once). Keys are `VIDEO#t=SECONDS` with three decimals, the W3C media
fragment syntax; if two frames of a video round to the same millisecond, every frame of
that millisecond becomes `VIDEO#t=SECONDS&frame=INDEX`, so keys stay unique whatever the
sampling (VIDEO is the video's key, `items.file_key`: its path with any '#' doubled).
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import re
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from sapiens2_cli.pipeline.decode import fit
from sapiens2_cli.pipeline.items import (
    Failure,
    Item,
    Preprocess,
    Reader,
    Row,
    derived_key,
    file_key,
    image_columns,
)
from sapiens2_cli.pipeline.options import DEFAULTS
from sapiens2_cli.pipeline.sources import Expansion, Source
from sapiens2_cli.text import one_line

#: Containers picked up when walking a folder (case-insensitive).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
#: Frames kept per second unless --fps / --every-frame say otherwise (why: pipeline/options.py).
DEFAULT_FPS = DEFAULTS.video_fps
#: A stream that stops this much (seconds) before the duration its container declares is
#: reported as truncated; less than this is taken as the container's rounding.
_SHORT_BY = 1.0
#: Demuxers that read still images: such a file is an image, not a video.
_IMAGE_DEMUXERS = re.compile(r"^(image2|.*_pipe)$")


class VideoError(Exception):
    """A file that cannot be read as a video; the message is the one-line reason recorded."""


@dataclass(frozen=True)
class Frame:
    index: int  # position among all frames of the stream, in presentation order
    pts: int  # presentation timestamp, in the stream's time base
    timestamp: float  # seconds since the stream's first frame
    fragment: str  # key suffix after '#': "t=1.000", or "t=1.000&frame=30" on a tie

    def key(self, video: str) -> str:
        """Its key, for the video at path `video`."""
        return derived_key(video, self.fragment)


@dataclass(frozen=True)
class Probe:
    frames: list[Frame]  # the frames to keep, in presentation order
    total: int  # frames found in the stream (kept or not)
    damage: str | None  # why the stream ended early (its frames after that are lost), or None


def probe(path: str, fps: float | None = DEFAULT_FPS) -> Probe:
    """List the frames to keep (`fps` per second, or all with None) without decoding.

    Raises VideoError for a file FFmpeg cannot open or that has no video stream.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        pts: list[int] = []
        packets = 0
        damage = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packets += 1
                if packet.is_corrupt:
                    damage = "corrupt or truncated data"
                    break
                t = packet.pts if packet.pts is not None else packet.dts
                if t is not None and not packet.is_discard:
                    pts.append(t)
        except av.FFmpegError as e:
            damage = one_line(e)
        if not pts:
            if damage or not packets:
                raise VideoError(f"no readable video frames ({damage or 'empty stream'})")
            raise VideoError(
                "video frames without timestamps (a raw stream, not in a container): "
                "remux it first, e.g. ffmpeg -i IN -c copy OUT.mkv"
            )
        pts.sort()
        damage = damage or _short(stream, pts)
    base = stream.time_base or Fraction(1, 1)
    times = [(p - pts[0]) * base for p in pts]
    keep = range(len(pts)) if fps is None else _sample(times, Fraction(fps).limit_denominator())
    tags = [f"t={float(t):.3f}" for t in times]
    ties = {tag for tag, n in Counter(tags).items() if n > 1}
    frames = [
        Frame(
            i,
            pts[i],
            float(times[i]),
            tags[i] + (f"&frame={i}" if tags[i] in ties else ""),
        )
        for i in keep
    ]
    if damage:
        damage = f"video stops at t={float(times[-1]):.3f} s after {len(pts)} frames: {damage}"
    return Probe(frames, len(pts), damage)


FrameResult = tuple[Frame, np.ndarray | str]  # pixels, or why this frame has none


def decode(path: str, frames: Sequence[Frame], threads: int = 0) -> Iterator[FrameResult | str]:
    """RGB frames (H, W, 3) uint8 for `frames` (consecutive kept frames), never raising.

    Yields (frame, pixels) for each frame decoded, in order; a frame the decoder skipped
    or flagged corrupt gets (frame, reason); if the stream ends or breaks before the last
    wanted frame, one final reason string stands for all the frames not produced.

    The decoder stays open afterwards (one per process): a next call for frames shortly
    after these in the same file decodes on from there instead of seeking back to a
    keyframe and decoding that stretch again, which made runs of 8 frames cost 5x.
    """
    global _cursor
    wanted = deque(frames)
    if not wanted:
        return
    try:
        if _cursor is None or not _cursor.leads_to(path, wanted[0]):
            close_decoder()
            _cursor = _Cursor.at(path, wanted[0], threads)
        cursor = _cursor
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
        close_decoder()
        if wanted:
            yield f"video decoding failed: {one_line(e)}"
        return
    close_decoder()  # the stream ended
    if wanted:
        yield (
            f"video ends early (truncated or corrupt): {len(wanted)} frames from "
            f"t={wanted[0].timestamp:.3f} s were not decoded"
        )


def close_decoder() -> None:
    """Close the video this process keeps open between `decode` calls, if any."""
    global _cursor
    if _cursor is not None:
        _cursor.close()
        _cursor = None


def _before_fork() -> None:
    """FFmpeg's decoding threads must not run when a process forks (decode workers are
    forked): a child can inherit a lock one of them held, and hang. They end when their
    codec is freed, which the one picture whose side data was read (`_Cursor.matrix`)
    delays until the garbage collector breaks its reference cycle: so collect now."""
    if _cursor is not None:
        close_decoder()
        gc.collect()


os.register_at_fork(before=_before_fork)


class _Cursor:
    """An open video decoding forward, picture by picture, in presentation order."""

    #: A next run starting at most this far (seconds) past the last picture decodes on
    #: rather than seeking: about one keyframe interval of common video, which is what a
    #: seek would decode again anyway.
    CONTINUE_WITHIN = 2.0

    def __init__(self, path: str, start: int | None, threads: int) -> None:
        self.path, self.stat = path, _stat(path)
        self.container = _open(path)
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
            with _open(path) as container:
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


_cursor: _Cursor | None = None  # this process's open video, see decode()


def _stat(path: str) -> tuple[int, int]:
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


def _open(path: str) -> av.container.InputContainer:
    try:
        container = av.open(path, "r")
    except FileNotFoundError:
        raise VideoError("file not found") from None
    except IsADirectoryError:
        raise VideoError("is a folder, not a video file") from None
    except PermissionError:
        raise VideoError("permission denied") from None
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"not a video, or truncated before its index: {one_line(e)}") from None
    name, has_video = container.format.name, bool(container.streams.video)
    if _IMAGE_DEMUXERS.match(name) or not has_video:
        container.close()
        what = "a still image" if has_video else "no video stream"
        raise VideoError(f"not a video ({what}, format {name})")
    return container


def _sample(times: list[Fraction], fps: Fraction) -> list[int]:
    """For each target k/fps, the first frame at or after it, each frame once."""
    keep, target = [], Fraction(0)
    for i, t in enumerate(times):
        if t >= target:
            keep.append(i)
            target = (math.floor(t * fps) + 1) / fps
    return keep


def _short(stream: av.video.stream.VideoStream, pts: list[int]) -> str | None:
    """A reason if the stream holds clearly fewer frames than its container declares.

    Containers declare where the stream ends, not how long it lasts from its first frame:
    Matroska's per-track DURATION tag is its end time, and `duration` counts from
    `start_time` (which FFmpeg fills with the container's when it found no video before
    reading its timings: video behind a title or an audio track starting at 0). So the
    last frame's own time is compared with that end, on the same clock; the tag goes
    first, being the video track's own end where `duration` may be the whole file's.
    """
    if stream.frames and len(pts) < stream.frames:
        return f"the container lists {stream.frames} frames"
    base = stream.time_base
    end = None
    if m := re.fullmatch(r"(\d+):(\d+):([\d.]+)", _tag(stream, "DURATION")):
        end = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    elif stream.duration and base:
        start = stream.start_time if stream.start_time is not None else pts[0]
        end = float((start + stream.duration) * base)
    if end is None or not base:
        return None
    if float(pts[-1] * base) + _SHORT_BY < end:
        return f"the container declares {end - float(pts[0] * base):.3f} s"
    return None


def _tag(stream: av.video.stream.VideoStream, name: str) -> str:
    """A metadata tag of the stream, whatever its case ("" if absent): Matroska stores
    tags upper-cased (`ROTATE`, `DURATION`), MP4 as written, and FFmpeg finds either."""
    return next((v for k, v in stream.metadata.items() if k.lower() == name.lower()), "")


def _display_matrix(picture: av.VideoFrame) -> np.ndarray | None:
    for side in picture.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(side), dtype=np.int32)
    return None


def _legacy_rotation(stream: av.video.stream.VideoStream) -> int:
    """The old `rotate` tag (clockwise degrees), which remuxed phone video still carries."""
    try:
        return int(float(_tag(stream, "rotate") or 0))
    except ValueError:
        return 0


@dataclass(frozen=True)
class VideoReader(Reader):
    """Decodes a run of a video's frames (the items' locators) from one seek."""

    #: Frames per decode call at most (the loader also caps it at the batch size): enough
    #: to spread a seek over many frames, few enough to keep a long video from holding a
    #: worker, or its memory, for long.
    chunk_rows = 256

    def read(self, items: Sequence[Item], prep: Preprocess) -> Iterator[Row | Failure]:
        by_index = {item.locator.index: item for item in items}
        frames = [item.locator for item in items]
        for result in decode(items[0].file, frames, _decode_threads()):
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

    from sapiens2_cli.pipeline.loader import usable_cores

    info = get_worker_info()
    workers = info.num_workers if info is not None else 1
    return max(1, usable_cores() // workers)


class VideoSource(Source):
    """Each video file gives its kept frames, keyed VIDEO#t=SECONDS (see the module doc)."""

    extensions = VIDEO_EXTENSIONS

    def __init__(self, fps: float = DEFAULT_FPS) -> None:
        self.fps = fps  # frames kept per second; 0: every frame

    def expand(self, files: Sequence[str]) -> Expansion:
        reader, out = VideoReader(), Expansion()
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

    def settings(self) -> dict[str, object]:
        return {"video_fps": float(self.fps)}
