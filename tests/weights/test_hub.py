"""Checkpoint resolution and `sapiens2 download` against a loopback hub (tests/fake_hub.py).

In-process tests go through `point_at` (see there why the environment alone is not
enough); the CLI tests run `sapiens2` in a subprocess, which reads its environment.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from extract_helpers import sapiens2, sapiens2_subprocess
from fake_hub import point_at
from paths import TINY
from safetensors.torch import save_file

from sapiens2_cli import Sapiens2Error, build_backbone
from sapiens2_cli.weights.hub import hub_file, is_cached, resolve_checkpoint

REPO = "facebook/sapiens2-pretrain-0.4b"
FILE = "sapiens2_0.4b_pretrain.safetensors"


def _assert_one_error_line(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(rf"error: .*{pattern}", last), last


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "task", "repo", "filename"),
    [
        ("0.1b", None, "facebook/sapiens2-pretrain-0.1b", "sapiens2_0.1b_pretrain.safetensors"),
        ("1B", None, "facebook/sapiens2-pretrain-1b", "sapiens2_1b_pretrain.safetensors"),
        ("1b_4k", None, "facebook/sapiens2-pretrain-1b-4k", "sapiens2_1b_4k_pretrain.safetensors"),
        ("5b", "pointmap", "facebook/sapiens2-pointmap-5b", "sapiens2_5b_pointmap.safetensors"),
        ("0.4b", "POSE", "facebook/sapiens2-pose-0.4b", "sapiens2_0.4b_pose.safetensors"),
    ],
)
def test_short_names_map_to_hub_repositories(arch, task, repo, filename):
    assert (hub_file(arch, task).repo_id, hub_file(arch, task).filename) == (repo, filename)


@pytest.mark.parametrize(
    ("arch", "task", "message"),
    [
        ("0.1b", "pose", r"no pose checkpoint for arch 0\.1b: task checkpoints exist for 0\.4b"),
        ("1b-4k", "seg", r"no seg checkpoint for arch 1b-4k"),
        ("1b", "depth", r"unknown task 'depth': choose one of pose, seg, normal, pointmap"),
        ("2b", None, r"unknown arch '2b'"),
    ],
)
def test_unknown_arch_task_pairs_say_what_exists(arch, task, message):
    with pytest.raises(Sapiens2Error, match=message):
        resolve_checkpoint(arch, task)


# --- download and cache -----------------------------------------------------------------


def test_download_then_offline_cache_hit(hub, go_offline):
    hub.add(REPO, {FILE: TINY})
    assert not is_cached("0.4b")
    path = resolve_checkpoint("0.4b")
    assert path.name == FILE
    assert path.read_bytes() == TINY.read_bytes()
    assert is_cached("0.4b")

    seen = len(hub.requests)
    go_offline()
    assert resolve_checkpoint("0.4b") == path  # what `extract --arch 0.4b` does offline
    assert is_cached("0.4b")
    assert len(hub.requests) == seen


def test_missing_expected_name_falls_back_to_the_listed_safetensors(hub, go_offline, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# weights\n")
    hub.add(REPO, {"model.safetensors": TINY, "README.md": readme})
    path = resolve_checkpoint("0.4b")
    assert path.name == "model.safetensors"
    assert any(r.startswith(f"GET /api/models/{REPO}") for r in hub.requests)

    go_offline()
    assert resolve_checkpoint("0.4b") == path
    assert is_cached("0.4b")


def test_a_repo_with_several_safetensors_asks_for_a_choice(hub, tmp_path):
    hub.add(REPO, {"a.safetensors": TINY, "b.safetensors": TINY})
    with pytest.raises(Sapiens2Error, match=r"no single \.safetensors .*a\.safetensors, b\."):
        resolve_checkpoint("0.4b")


def test_local_dir_and_revision(hub, go_offline, tmp_path):
    repo = hub.add(REPO, {FILE: TINY})
    path = resolve_checkpoint("0.4b", revision=repo.commit, local_dir=tmp_path / "w")
    assert path == tmp_path / "w" / FILE
    go_offline()
    assert resolve_checkpoint("0.4b", local_dir=tmp_path / "w") == path


def test_task_checkpoint_goes_to_its_own_repository(hub):
    hub.add("facebook/sapiens2-seg-1b", {"sapiens2_1b_seg.safetensors": TINY})
    assert resolve_checkpoint("1b", "seg").parent.parent.parent.name == (
        "models--facebook--sapiens2-seg-1b"
    )


# --- errors -----------------------------------------------------------------------------


def test_offline_with_nothing_cached(hub, go_offline):
    go_offline()
    with pytest.raises(Sapiens2Error, match=r"not in the local cache and HF_HUB_OFFLINE is set"):
        resolve_checkpoint("1b")
    assert hub.requests == []


def test_gated_repo_without_and_with_a_token(hub, monkeypatch):
    hub.add(REPO, {FILE: TINY}, token="hf_right")
    with pytest.raises(Sapiens2Error, match=r"is gated: accept the Sapiens2 license at .* --token"):
        resolve_checkpoint("0.4b")
    with pytest.raises(Sapiens2Error, match=r"is gated and your token has no access yet"):
        resolve_checkpoint("0.4b", token="hf_wrong")
    assert resolve_checkpoint("0.4b", token="hf_right").name == FILE


def test_token_from_the_environment(hub, monkeypatch):
    hub.add(REPO, {FILE: TINY}, token="hf_right")
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert resolve_checkpoint("0.4b").name == FILE


def test_missing_repository_and_revision(hub):
    with pytest.raises(Sapiens2Error, match=r"sapiens2-pretrain-1b was not found or needs auth"):
        resolve_checkpoint("1b")
    hub.add(REPO, {FILE: TINY})
    with pytest.raises(Sapiens2Error, match=r"revision 'v9' does not exist in .*0\.4b"):
        resolve_checkpoint("0.4b", revision="v9")


@pytest.mark.slow  # huggingface_hub retries a refused connection for ~20 s before giving up
def test_unreachable_hub(monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_at(monkeypatch, f"http://127.0.0.1:{port}", offline=False)
    with pytest.raises(Sapiens2Error, match=r"cannot reach the Hugging Face Hub at http://127"):
        resolve_checkpoint("0.4b")


# --- the CLI ----------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess that imports torch
def test_cli_offline_error_is_one_line(hub, go_offline):
    go_offline()
    _assert_one_error_line(
        sapiens2_subprocess("download", "--arch", "0.8b"),
        r"sapiens2-pretrain-0\.8b is not in the local cache and HF_HUB_OFFLINE is set: "
        r"run `sapiens2 download --arch 0\.8b` once with network access",
    )


@pytest.mark.slow  # a subprocess that imports torch
def test_cli_download_checks_the_arch(hub):
    hub.add(REPO, {FILE: TINY})
    _assert_one_error_line(
        sapiens2_subprocess("download", "--arch", "0.4b"), r"holds a custom size .*, not arch 0\.4b"
    )


@pytest.mark.slow  # serves a 114 MB file
def test_cli_download_prints_the_path_alone(hub, tmp_path):
    """The smallest zoo arch, in the exact key set and shapes of the real file, stored as
    1-byte float8 zeros: the arch check reads only the header, so this is the real check
    on an eighth of the real file's bytes."""
    shapes = build_backbone("0.1b", device="meta").state_dict()
    state = {k: torch.zeros(v.shape, dtype=torch.float8_e4m3fn) for k, v in shapes.items()}
    served = tmp_path / "sapiens2_0.1b_pretrain.safetensors"
    save_file(state, str(served))
    del state
    hub.add("facebook/sapiens2-pretrain-0.1b", {served.name: served})

    result = sapiens2_subprocess("download", "--arch", "0.1b")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.removesuffix("\n"))
    assert result.stdout == f"{path}\n"
    assert path.name == served.name
    assert path.stat().st_size == served.stat().st_size


def test_archs_shows_what_is_cached(hub):
    hub.add(REPO, {FILE: TINY})
    resolve_checkpoint("0.4b")
    result = sapiens2("archs", "--json", catch_exceptions=False)
    cached = {r["arch"]: r["cached"] for r in json.loads(result.stdout)}
    assert cached == {
        "0.1b": False,
        "0.4b": True,
        "0.8b": False,
        "1b": False,
        "1b-4k": False,
        "5b": False,
    }
