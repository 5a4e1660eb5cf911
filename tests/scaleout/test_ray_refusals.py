"""What `--engine ray` refuses, each with one line before any work and nothing at OUT:
no Ray installed, an unreachable cluster, --shard, torchrun, --ray-address alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from extract_helpers import FAST, extract
from paths import DATA
from s3_server import free_port

import sapiens2_cli
from sapiens2_cli.errors import Sapiens2Error

#: Starts a Ray worker node on 127.0.0.1 (tests/scaleout/ray_node.py).
NODE = Path(__file__).with_name("ray_node.py")


def refused(tmp_path, **options) -> str:
    out = tmp_path / "f.h5"
    with pytest.raises(Sapiens2Error) as caught:
        sapiens2_cli.extract([DATA / "coffee.jpg"], out, checkpoint=FAST[1], **options)
    assert "\n" not in str(caught.value)
    assert not out.exists()
    return str(caught.value)


def test_without_the_extra_the_line_names_it(tmp_path, monkeypatch):
    """Catches: an ImportError traceback instead of the install line."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    assert "pip install 'sapiens2-cli[ray]'" in refused(tmp_path, engine="ray")


def test_an_unreachable_cluster_is_one_line_within_30_s(tmp_path, monkeypatch):
    """Catches: Ray's own retries (minutes) or a traceback for a wrong RAY_ADDRESS."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    start = time.monotonic()
    line = refused(tmp_path, engine="ray")
    assert time.monotonic() - start < 30
    assert "no Ray cluster answers at 127.0.0.1:" in line


def test_shard_torchrun_and_a_lone_address_are_refused(tmp_path, monkeypatch):
    """Catches: a Ray run that also takes a crc32 part (rows missing from OUT), or one
    started by every torchrun rank (each redoing the whole job)."""
    assert "drop --shard" in refused(tmp_path, engine="ray", shard="0/2")
    assert "applies with --engine ray" in refused(tmp_path, ray_address="127.0.0.1:6379")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert "not under torchrun" in refused(tmp_path, engine="ray")


def test_an_out_a_node_cannot_see_is_one_line_before_any_work(tmp_path):
    """A second node in its own mount namespace sees an empty tmpfs where OUT's folder is:
    a real Ray cluster whose filesystem is not shared. Catches: actors writing rows that
    the driver never finds (on several machines, a local -o), found only after the work."""
    from ray_helpers import RAY, local_ray, ray  # Ray itself: skipped without it

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode:
        pytest.skip("needs unshare -m (a private mount namespace) for a node without OUT")
    folder = tmp_path / "out"
    folder.mkdir()
    with local_ray() as address:
        node = subprocess.Popen(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                f"mount -t tmpfs none {folder} && exec {sys.executable} {NODE} {address}",
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                assert node.poll() is None and time.monotonic() < deadline, "no second node"
                time.sleep(0.2)
            result = extract(DATA / "coffee.jpg", "-o", folder / "f.h5", *RAY)
        finally:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=60)
    assert isinstance(result.exception, Sapiens2Error), result.output
    line = str(result.exception)
    assert "not on a filesystem every Ray node shares" in line and "\n" not in line
    assert not (folder / "f.h5").exists()
