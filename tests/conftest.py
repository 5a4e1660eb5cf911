"""Shared fixtures: an isolated Hugging Face cache, the golden tiny weights, tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


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
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The golden tiny weights (D=32, 18 blocks, GQA in blocks 8-9), no tokenizer."""
    return GOLDEN / "tiny_weights.safetensors"


@pytest.fixture(scope="session")
def tiny_4k_checkpoint() -> Path:
    """The golden tiny weights with a 2-layer 4K tokenizer."""
    return GOLDEN / "tiny_4k_weights.safetensors"
