"""Shared fixtures: one torch thread, isolated caches, the golden tiny weights, the test
photos. As the root conftest (no __init__.py anywhere), it puts tests/ on sys.path, so
test modules in any folder import the helpers here (paths, extract_helpers, ...) by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from paths import GOLDEN, TINY, TINY_4K, copy_photos

# Every Ray instance the tests start (in this process and its children) listens on
# 127.0.0.1, not on the machine's network address: Ray reads this when it is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


#: `SAPIENS2_TEST_CPU_BF16=yes|no` runs the tests in this process as if the CPU had (or
#: lacked) native bf16, where `--precision auto` means bf16 (or fp32): the suite must hold on
#: both kinds of machine, and .ci/run runs the fast tests both ways.
FAKE_CPU_BF16 = os.environ.get("SAPIENS2_TEST_CPU_BF16")


@pytest.fixture(scope="session", autouse=True)
def cpu_bf16_as_asked():
    """Session-wide, so module fixtures (the references) see the same CPU as the tests."""
    if FAKE_CPU_BF16 is None:
        yield
        return
    if FAKE_CPU_BF16 not in ("yes", "no"):
        raise pytest.UsageError("SAPIENS2_TEST_CPU_BF16 is yes or no")
    from sapiens2_cli.engine import device

    real, proc = device.cpu_flags, Path("/proc/cpuinfo")
    faked = real(proc) - set(device.CPU_BF16_FLAGS)
    if FAKE_CPU_BF16 == "yes":
        faked.add("avx512_bf16")

    def cpu_flags(cpuinfo: Path = proc) -> set[str]:
        return set(faked) if cpuinfo == proc else real(cpuinfo)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device, "cpu_flags", cpu_flags)
        yield


@pytest.fixture(scope="session", autouse=True)
def quiet_machine(tmp_path_factory):
    """One torch thread, here and in subprocesses (OMP_NUM_THREADS): the tiny models are
    faster alone than fighting other processes for shared cores. A private cache (the
    checkpoint hashes) for what runs outside a test, as module-scoped fixtures do."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


#: A closed port: anything that tries the hub without a test's fake hub fails at once.
NO_HUB = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def isolated_hf_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's Hugging Face or sapiens2 caches, or the hub.

    Both the environment (for subprocesses) and huggingface_hub's constants (copied from
    the environment at its import, before any fixture runs) point at a temporary home.
    """
    from fake_hub import point_at

    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg_cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    point_at(monkeypatch, NO_HUB, offline=True)
    return home


@pytest.fixture(scope="session")
def s3():
    """A local S3 server (tests/s3_server.py), its endpoint and credentials in the
    environment (where s3fs looks); the filesystem as s3fs makes it."""
    s3fs = pytest.importorskip("s3fs")
    from s3_server import CREDENTIALS, moto_server

    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
            env.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return TINY


@pytest.fixture(scope="session")
def tiny_4k_checkpoint() -> Path:
    return TINY_4K


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of the four test photos (tmp_path/photos), the test's own to change."""
    return copy_photos(tmp_path / "photos")
