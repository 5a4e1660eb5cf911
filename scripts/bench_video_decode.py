"""Frames per second decoded by sapiens2_cli.inputs.video.source against plain FFmpeg decoding.

Makes a clip (default 1080p, 10 s at 30 fps, H.264 via libx264 with B-frames and a
keyframe every 2 s, as phone and web video is), then in the same run times:

* ffmpeg-style: PyAV's plain sequential decode with FFmpeg threads on and no colour
  conversion, which is what `ffmpeg -i CLIP -f null -` does; the ffmpeg binary itself
  too when one is on PATH;
* the same plus conversion to RGB (`to_ndarray("rgb24")`), what any loop feeding a model
  pays;
* this module: probe (demux only), and decode of every frame in one run and in runs of
  --chunks frames (extract hands decode workers runs of at most the batch size, default
  8), all to one worker (which decodes on from one run to the next) or round-robin to
  --workers workers (each run then seeks to the keyframe before it and decodes from
  there); and sampling at --fps (frames between kept ones are decoded, not converted).

Reported per method: frames/s (wall clock, best of --repeat, methods taken in turn) and
CPU ms per frame (all of this process's threads, FFmpeg's included), which a busy machine
disturbs much less than the wall clock.

    python scripts/bench_video_decode.py [--size 1080x1920] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
from PIL import Image

from sapiens2_cli.inputs.video.decoder import FrameDecoder
from sapiens2_cli.inputs.video.probe import probe

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "coffee.jpg"


def make_clip(path: Path, height: int, width: int, seconds: int, rate: int) -> None:
    """A pan across a photo enlarged past the frame, so every frame moves like real video."""
    photo = Image.open(PHOTO).convert("RGB")
    scale = max(height / photo.height, (width + 4 * seconds * rate) / photo.width)
    big = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale))))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.codec_context.gop_size = 2 * rate
        stream.options = {"preset": "veryfast", "crf": "20", "bframes": "2"}
        for i in range(seconds * rate):
            window = np.ascontiguousarray(big[:height, 4 * i : 4 * i + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        container.mux(stream.encode())


def timed(fn) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds of all this process's threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - start, time.process_time() - cpu


def plain(path: Path, rgb: bool) -> int:
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for frame in container.decode(stream):
            if rgb:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n


def ours(path: Path, fps: float | None, chunk: int | None, workers: int = 1) -> int:
    """Frames decoded by this module: in one run, or in runs of `chunk` consecutive frames
    as the extract loader hands them out, round-robin to `workers` decode processes (each
    keeping its own open decoder; simulated one after the other here)."""
    frames = probe(str(path), fps).frames
    size = chunk or len(frames)
    runs = [frames[i : i + size] for i in range(0, len(frames), size)]
    n = 0
    for worker in range(workers):
        decoder = FrameDecoder()  # a process of its own
        for run in runs[worker::workers]:
            for result in decoder.decode(str(path), run):
                assert isinstance(result, tuple) and not isinstance(result[1], str), result
                n += 1
        decoder.close()
    return n


def ffmpeg_binary(path: Path) -> float | None:
    """Seconds `ffmpeg -i CLIP -f null -` takes, if an ffmpeg binary is installed."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    start = time.perf_counter()
    subprocess.run([exe, "-v", "error", "-i", str(path), "-f", "null", "-"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1080x1920", help="HxW of the clip")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=30, help="frames per second of the clip")
    parser.add_argument("--fps", type=float, default=1.0, help="sampling rate to time")
    parser.add_argument("--chunks", default="8,64", help="frames per decode call, to time")
    parser.add_argument("--workers", type=int, default=4, help="decode processes to model")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each timing")
    parser.add_argument("--clip", type=Path, help="time this file instead of making one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or Path(tmp) / "clip.mp4"
        if args.clip is None:
            print(f"making {args.size} clip ({args.seconds} s)...", file=sys.stderr)
            make_clip(clip, height, width, args.seconds, args.rate)
        total = probe(str(clip), None).total

        methods = {
            "ffmpeg_style_pyav": lambda: plain(clip, rgb=False),
            "pyav_plus_rgb": lambda: plain(clip, rgb=True),
            "probe_only": lambda: len(probe(str(clip), None).frames),
            "ours_every_frame": lambda: ours(clip, None, None),
            **{
                f"ours_every_frame_runs_of_{n}_{w}_worker{'s' * (w > 1)}": (
                    lambda n=n, w=w: ours(clip, None, n, w)
                )
                for n in (int(c) for c in args.chunks.split(","))
                for w in (1, args.workers)
            },
            f"ours_sampled_{args.fps:g}fps": lambda: ours(clip, args.fps, None),
        }
        # Round-robin, best of --repeat: load that comes and goes hits every method alike.
        runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in methods}
        for _ in range(args.repeat):
            for name, fn in methods.items():
                runs[name].append(timed(fn))
        results = {}
        for name, timings in runs.items():
            n, seconds, _ = min(timings, key=lambda r: r[1])
            cpu = min(r[2] for r in timings)
            if name.startswith("ours_sampled"):  # every frame is decoded, n are kept
                name, n = f"{name}_keeping_{n}", total
            results[name] = {
                "frames": n,
                "seconds": round(seconds, 3),
                "fps": round(n / seconds, 1),
                "cpu_ms_per_frame": round(1000 * cpu / n, 2),
            }
        binary = ffmpeg_binary(clip)
        if binary is not None:
            results["ffmpeg_binary"] = {
                "frames": total, "seconds": round(binary, 3), "fps": round(total / binary, 1)
            }  # fmt: skip
        clip_size = clip.stat().st_size

    report = {
        "clip": {"size": args.size, "frames": total, "rate": args.rate, "bytes": clip_size},
        "results": results,
        "environment": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_threads": os.cpu_count(),
            "platform": platform.platform(),
            "pyav": av.__version__,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "ffmpeg_binary": shutil.which("ffmpeg"),
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"clip {args.size}, {total} frames at {args.rate} fps, {clip_size / 1e6:.1f} MB")
    for name, r in results.items():
        cpu = r.get("cpu_ms_per_frame", float("nan"))
        print(f"  {name:40s} {r['frames']:5d} frames {r['fps']:8.1f} /s  {cpu:6.2f} CPU ms/frame")
    if binary is None:
        print("  (no ffmpeg binary on PATH: the PyAV line is the ffmpeg-style figure)")


if __name__ == "__main__":
    main()
