"""A full disk (a file size limit standing in for it): one line, nothing half-made left."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import numpy as np
import pytest
from extract_helpers import FAST, sapiens2_subprocess
from paths import ROOT
from PIL import Image
from test_writers import ROW, SETTINGS, batch

from sapiens2_cli.output import open_features, open_writer


def on_a_full_disk(limit: int, *argv: object) -> subprocess.CompletedProcess:
    """`sapiens2 *argv` in a process that cannot write past `limit` bytes of a file: writes
    fail with EFBIG as they would with ENOSPC on a full disk (as in test_extract_kill.py)."""

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return sapiens2_subprocess(*argv, env=env, preexec_fn=small_disk)


def photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (48, 64), (40 * i, 90, 200)).save(folder / f"{i}.png")
    return folder


def parts_of_a_split(out: Path) -> None:
    """The two complete parts of a split extract into `out`, beside it."""
    for k in range(2):
        part = out.with_name(out.name + ".parts") / f"part-0000{k}-of-00002.h5"
        writer, _ = open_writer(part, "h5", {**SETTINGS, "part": [k, 2]}, ROW, np.float16)
        writer.write(batch(2 * k, 2, [(f"bad {k}.jpg", "truncated")]))
        writer.close(complete=True)


def features_to_draw(path: Path) -> None:
    writer, _ = open_writer(path, "h5", SETTINGS, ROW, np.float16)
    rows = batch(0, 2)
    rows.features = np.random.default_rng(0).standard_normal(rows.features.shape)
    rows.features = rows.features.astype(np.float16)
    rows.columns["original_size"][:] = (64, 48)
    writer.write(rows)
    writer.close(complete=True)


FULL_DISK_CASES = [
    "new h5 output",
    "new npy output",
    "npy shard",
    "small npy shard",
    "merge --merge copy",
    "viz",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", FULL_DISK_CASES)
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(tmp_path, case):
    """Each of these was a traceback on a full disk and left a file or folder behind: a new
    output (`OUT.creating`; an empty npy folder), an npy shard (a message without "the
    disk is full", and its `.tmp` until the next run; one smaller than stdio's buffer was
    committed cut short, with exit 0), `merge --merge copy` (`m.h5.merging`), `viz`
    (PIL's OSError)."""
    extract = ["extract", tmp_path / "in", *FAST, "--precision", "fp32"]
    if case == "new h5 output":
        photos(tmp_path / "in", 1)
        run = on_a_full_disk(1000, *extract, "-o", tmp_path / "f.h5")
        gone = tmp_path / "f.h5"
    elif case == "new npy output":
        photos(tmp_path / "in", 1)
        run = on_a_full_disk(100, *extract, "-o", tmp_path / "f", "--format", "npy")
        gone = tmp_path / "f"
    elif case.endswith("npy shard"):  # the manifest (about 1 kB) fits, the shard does not
        photos(tmp_path / "in", 4)
        layers = "0,1,2,3" if case == "npy shard" else "0"  # 12 kB or 3 kB of features
        run = on_a_full_disk(
            2000, *extract, "-o", tmp_path / "f", "--rows-per-shard", "4", "--layers", layers
        )
        gone = tmp_path / "f" / "shard-00000.features.npy"
    elif case == "merge --merge copy":
        parts_of_a_split(tmp_path / "m.h5")
        run = on_a_full_disk(200_000, "merge", "-o", tmp_path / "m.h5", "--merge", "copy")
        gone = tmp_path / "m.h5"
    else:
        features_to_draw(tmp_path / "f.h5")
        run = on_a_full_disk(100, "viz", tmp_path / "f.h5", "-o", tmp_path / "pics", "-q")
        gone = tmp_path / "pics"
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: writing ") and run.stderr.count("\n") == 1
    assert "the disk is full" in run.stderr and "MiB free there" in run.stderr
    assert str(gone.parent if case.endswith("npy shard") else gone) in run.stderr
    assert not gone.exists()
    if case.endswith("npy shard"):
        with open_features(tmp_path / "f") as f:
            assert len(f) == 0 and f.settings["complete"] is False
    left = [p.name for p in tmp_path.rglob("*") if p.suffix in (".creating", ".merging", ".tmp")]
    assert left == [] and not list(tmp_path.glob("*.lock"))
