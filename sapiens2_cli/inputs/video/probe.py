"""Video files -> the frames to keep and their keys, from timestamps alone (PyAV demuxing).

A frame's key is known before any pixel is decoded, so resume can filter the keys that
are done and a long video can be split into runs that several workers decode
(`video_decoder`).

Times: a frame's `timestamp` is its presentation time in seconds from the stream's first
frame (players and `ffmpeg -ss` count from there too). Sampling at F per second keeps, for
each k = 0, 1, ..., the first frame whose timestamp is >= k/F (a frame that is first for
several k is kept once). Keys are `VIDEO#t=SECONDS` with three decimals, the W3C media
fragment syntax; if two frames of a video round to the same millisecond, every frame of
that millisecond becomes `VIDEO#t=SECONDS&frame=INDEX`, so keys stay unique whatever the
sampling (VIDEO is the video's key, `items.file_key`: its path with any '#' doubled).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import av

from sapiens2_cli.config.options import DEFAULTS
from sapiens2_cli.inputs.items import derived_key
from sapiens2_cli.remote import is_url, open_input
from sapiens2_cli.text import one_line, open_failure

#: Frames kept per second unless --fps / --every-frame say otherwise (why: config/options.py).
DEFAULT_FPS = DEFAULTS.fps
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
    with open_video(path) as container:
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


def open_video(path: str) -> av.container.InputContainer:
    try:
        container = av.open(open_input(path) if is_url(path) else path, "r")
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise VideoError(open_failure(e, "a video file")) from None
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
    if m := re.fullmatch(r"(\d+):(\d+):([\d.]+)", stream_tag(stream, "DURATION")):
        end = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    elif stream.duration and base:
        start = stream.start_time if stream.start_time is not None else pts[0]
        end = float((start + stream.duration) * base)
    if end is None or not base:
        return None
    if float(pts[-1] * base) + _SHORT_BY < end:
        return f"the container declares {end - float(pts[0] * base):.3f} s"
    return None


def stream_tag(stream: av.video.stream.VideoStream, name: str) -> str:
    """A metadata tag of the stream, whatever its case ("" if absent): Matroska stores
    tags upper-cased (`ROTATE`, `DURATION`), MP4 as written, and FFmpeg finds either."""
    return next((v for k, v in stream.metadata.items() if k.lower() == name.lower()), "")
