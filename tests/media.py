"""Videos and tar shards the tests make themselves, from the real photos in tests/data."""

from __future__ import annotations

import io
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg")


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
) -> Path:
    """A clip whose frame i is frame_pixels(i), keyframes every `gop` frames, B-frames
    on (libx264), so decode order differs from presentation order."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "8", "bframes": "2", "scenecut": "0"}
        else:
            stream.options = {"qmin": "1", "qmax": "3"}
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1], vflip=rotation[2])
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(frame_pixels(i, *size), format="rgb24")
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


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
