"""Videos and tar shards the tests make themselves, from the real photos in tests/data."""

from __future__ import annotations

import io
import math
import tarfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from paths import DATA, PHOTOS
from PIL import Image


def frame_pixels(i: int, height: int = 96, width: int = 128) -> np.ndarray:
    """Frame i: a window panning across a photo, with a 16x16 block whose grey level is
    8 + 6*i, so the frame's index can be read back from any decoded picture."""
    photo = np.asarray(Image.open(DATA / "chelsea.jpg").convert("RGB"))
    photo = np.tile(photo, (1, 3, 1))  # wide enough to pan across
    frame = photo[:height, 2 * i : 2 * i + width].copy()
    frame[:16, :16] = 8 + 6 * i
    return frame


def index_of(rgb: np.ndarray) -> int:
    """The frame index a decoded picture shows (its grey block, see frame_pixels)."""
    return round((float(rgb[4:12, 4:12].mean()) - 8) / 6)


def make_video(
    path: Path,
    frames: int = 40,
    rate: int | Fraction = 10,
    codec: str = "libx264",
    rotation: tuple[float, bool, bool] | None = None,
    faststart: bool = False,
    size: tuple[int, int] = (96, 128),
    gop: int = 12,
    times: Sequence[Fraction] | None = None,
    tags: dict[str, str] | None = None,
    audio: tuple[float, float] | None = None,
) -> Path:
    """A clip whose frame i is frame_pixels(i), keyframes every `gop` frames, B-frames
    on (libx264), so decode order differs from presentation order.

    `times` sets each frame's presentation time in seconds (irregular, late starts, ties)
    instead of `frames` at `rate`; `tags` are the video stream's metadata; `audio` adds a
    silent Opus stream from its first to its second time (seconds), muxed before the video.
    """
    options = {"movflags": "faststart"} if faststart else {}
    times = [Fraction(i) / rate for i in range(frames)] if times is None else times
    time_base = Fraction(1, math.lcm(*(Fraction(t).denominator for t in times)))
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = time_base
        stream.metadata.update(tags or {})
        if codec == "libx264":
            stream.options = {"crf": "8", "bframes": "2", "scenecut": "0"}
        elif codec == "mpeg4":
            stream.options = {"qmin": "1", "qmax": "3"}
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1], vflip=rotation[2])
        if audio is not None:
            _silence(container, *audio)
        for i, t in enumerate(times):
            picture = av.VideoFrame.from_ndarray(frame_pixels(i, *size), format="rgb24")
            picture.pts, picture.time_base = int(t / time_base), time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def _silence(container: av.container.OutputContainer, start: float, end: float) -> None:
    """A silent mono Opus stream from `start` to `end` seconds, all muxed now."""
    stream = container.add_stream("libopus", rate=48000, layout="mono")
    n = 960  # 20 ms frames
    for first in range(round(start * 48000), round(end * 48000), n):
        samples = av.AudioFrame.from_ndarray(np.zeros((1, n), np.int16), "s16", "mono")
        samples.sample_rate, samples.pts, samples.time_base = 48000, first, Fraction(1, 48000)
        container.mux(stream.encode(samples))
    container.mux(stream.encode())


def plain_decode(path: Path) -> list[np.ndarray]:
    """Every frame in presentation order, decoded the plain way (no seek, no rotation)."""
    with av.open(str(path)) as container:
        pictures = sorted(container.decode(video=0), key=lambda p: p.pts)
        return [p.to_ndarray(format="rgb24") for p in pictures]


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """An uncompressed tar with these (name, bytes) members in this order."""
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def webdataset_members(samples: int = 4) -> list[tuple[str, bytes]]:
    """Members as img2dataset writes them: KEY.jpg (or .png) beside KEY.json/.txt/.cls."""
    members = []
    for n in range(samples):
        photo = PHOTOS[n % len(PHOTOS)]
        key = f"{n:09d}"
        members.append((f"{key}{Path(photo).suffix}", (DATA / photo).read_bytes()))
        members.append((f"{key}.json", b'{"caption": "a photo"}'))
        members.append((f"{key}.txt", b"a photo"))
        members.append((f"{key}.cls", str(n).encode()))
    return members


def pixels(results) -> dict[int, np.ndarray]:
    """Decoded frames by index; fails on any frame that came back as a reason."""
    out = {}
    for result in results:
        assert isinstance(result, tuple) and not isinstance(result[1], str), result
        out[result[0].index] = result[1]
    return out
