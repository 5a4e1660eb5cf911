"""The fake hub (tests/fake_hub.py, on 127.0.0.1) the hub tests download from."""

from __future__ import annotations

import pytest
from fake_hub import FakeHub, point_at


@pytest.fixture
def hub(monkeypatch):
    """A fake hub for one test, with huggingface_hub pointed at it, online."""
    with FakeHub() as server:
        point_at(monkeypatch, server.endpoint, offline=False)
        yield server


@pytest.fixture
def go_offline(monkeypatch, hub):
    """Switch the test to offline mode (HF_HUB_OFFLINE), the fake hub still named."""
    return lambda: point_at(monkeypatch, hub.endpoint, offline=True)
