"""Nothing lost: kill -9 at several moments, Ctrl-C, and a full disk, for both formats.

Each case runs the real command line in a subprocess, interrupts it, checks that OUT still
reads, reruns the same command, and compares with an uninterrupted run: every image
exactly once, features identical. A run to interrupt is held at a row (events.Hold), so it
is interrupted at that moment, never found finished by a poll that came too late.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest
from events import (
    IMPORT_LINES,
    Hold,
    committed_rows,
    imported,
    wait_for_file,
    wait_for_line,
    wait_for_rows,
)
from extract_helpers import extract, extract_subprocess
from paths import TINY
from PIL import Image

from sapiens2_cli.output import open_features

N_IMAGES = 150
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("many") / "in"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = rng.integers(24, 96, 2)
        folder = root / f"part{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}_é.png")
    (root / "part0/broken.jpg").write_text("not an image")
    return root


def args_for(fmt: str, images, out) -> list:
    extra = ["--rows-per-shard", "3"] if fmt == "npy" else []
    return [
        images, "-o", out, "--checkpoint", TINY, "--size", "64x48",
        "--batch-size", "1", "--workers", "1", "-q", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """Uninterrupted runs: {fmt: {path: features}}."""
    refs = {}
    for fmt in ("h5", "npy"):
        out = tmp_path_factory.mktemp("ref") / ("f.h5" if fmt == "h5" else "f")
        result = extract(*args_for(fmt, images, out))
        assert result.exit_code == 0, result.output
        refs[fmt] = as_dict(out)
    return refs


def as_dict(out) -> dict[str, np.ndarray]:
    with open_features(out) as f:
        assert len(set(f.paths)) == len(f.paths), "an image appears twice"
        assert f.settings["complete"] is True
        return dict(zip(f.paths, f.read(slice(None)), strict=True))


def finish_and_compare(fmt: str, images, out, reference) -> None:
    result = extract(*args_for(fmt, images, out))
    assert result.exit_code == 0, result.output
    got = as_dict(out)
    assert got.keys() == reference[fmt].keys()
    for path, features in reference[fmt].items():
        np.testing.assert_array_equal(got[path], features, err_msg=path)
    with open_features(out) as f:
        assert [p for p, _ in f.failed] == [str(images / "part0/broken.jpg")]


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_kill_9_at_several_moments_then_resume(images, reference, tmp_path, fmt):
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    args = args_for(fmt, images, out)
    step = 3 if fmt == "npy" else 1  # rows a commit adds: a shard of 3 (args_for), a batch
    marker = tmp_path / "held"
    starting = [  # (name, env, wait): events before any row; the run held at its first row
        ("inside torch's import", IMPORT_LINES, lambda p: wait_for_line(p, imported("torch._C"))),
        ("as OUT appears", None, lambda p: wait_for_file(p, out)),
    ]
    at_rows = [  # (name, rows OUT has committed at the kill, given those before the run)
        ("after the first commit", lambda before: 1),
        ("a third of the way", lambda before: N_IMAGES // 3),
        ("at a resumed run's first commit", lambda before: before + 1),
        ("most of the way", lambda before: 3 * N_IMAGES // 4),
    ]
    seen = []

    def kill(proc: subprocess.Popen, name: str) -> int:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rows = committed_rows(out)
        seen.append((name, rows))
        if rows >= 0:  # OUT exists: it must read, with each image once
            with open_features(out) as f:
                assert len(set(f.paths)) == len(f.paths), name
                f.read(slice(None))
        return rows

    for name, env, wait in starting:
        hold = Hold(1, marker)
        proc = extract_subprocess(*args, stdout=subprocess.DEVNULL, env=env, hold=hold)
        wait(proc)
        kill(proc, name)
    for name, target in at_rows:
        before = max(committed_rows(out), 0)
        new = step * math.ceil(max(target(before) - before, 1) / step)  # whole commits
        hold = Hold(new, marker)
        proc = extract_subprocess(*args, stdout=subprocess.DEVNULL, hold=hold)
        hold.wait(proc)
        wait_for_rows(proc, out, before + new)  # committed by the writer thread, run held
        assert kill(proc, name) == before + new, f"committed rows lost by the kill {name}"
    assert max(rows for _, rows in seen) < N_IMAGES, f"never killed mid-run: {seen}"
    finish_and_compare(fmt, images, out, reference)


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(images, reference, tmp_path, fmt):
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    hold = Hold(10, tmp_path / "held")
    proc = extract_subprocess(*args_for(fmt, images, out), hold=hold)
    hold.wait(proc)  # 10 rows handed to the writer thread, none after: Ctrl-C there
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    with open_features(out) as f:
        assert 10 <= len(f) < N_IMAGES and f.settings["complete"] is False
    finish_and_compare(fmt, images, out, reference)


@pytest.mark.parametrize(("fmt", "limit"), [("h5", 2**20 + 350_000), ("npy", 6_000)])
def test_a_full_disk_stops_with_a_message_and_a_readable_output(
    images, reference, tmp_path, fmt, limit
):
    """RLIMIT_FSIZE makes writes past `limit` bytes fail (EFBIG), as a full disk would.

    Decoding stays in-process: the limit would also stop decode workers from handing
    batches over through shared-memory files, which a full disk does not.
    """
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    args = [*args_for(fmt, images, out), "--workers", "0"]
    proc = extract_subprocess(*args, preexec_fn=small_disk)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.startswith("error: writing") and "free space" in stderr
    assert "Traceback" not in stderr
    with open_features(out) as f:
        assert 0 < len(f) < N_IMAGES and f.settings["complete"] is False
        f.read(slice(None))
    finish_and_compare(fmt, images, out, reference)


def test_workers_are_gone_after_a_kill(images, tmp_path):
    """Decode workers notice their parent died and exit, leaving no orphans behind."""
    out = tmp_path / "f.h5"
    hold = Hold(1, tmp_path / "held")
    proc = extract_subprocess(*args_for("h5", images, out), stdout=subprocess.DEVNULL, hold=hold)
    hold.wait(proc)
    children = [int(p) for p in os.popen(f"pgrep -P {proc.pid}").read().split()]
    assert children, "found no decode worker to watch (is pgrep there?)"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{pid}") for pid in children):
        assert time.monotonic() < deadline, "decode workers outlived the killed run"
        time.sleep(0.2)
