"""The hub as it is now (tests/fake_hub.py): the matting task, repositories holding the
original file beside transformers' files, and repositories holding only transformers'
files (a user's fine-tuned model), downloaded once and then read offline."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoints import write_random_checkpoint
from fake_hub import FakeHub
from paths import TINY
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sapiens2_cli import Sapiens2Config, Sapiens2Error, inspect_checkpoint, load_backbone
from sapiens2_cli.cli import app
from sapiens2_cli.weights.hub import hub_file, resolve_checkpoint, resolve_repo
from sapiens2_cli.weights.resolve import checkpoint_sha256, resolve_weights

transformers = pytest.importorskip("transformers")  # in the dev extra: runs in CI

REPO = "facebook/sapiens2-pretrain-0.4b"
FILE = "sapiens2_0.4b_pretrain.safetensors"
USER_REPO = "someone/sapiens2-finetuned"
SMALL = Sapiens2Config(embed_dim=64, num_layers=2, num_heads=4, ffn_dim=96)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random Sapiens2Model saved by transformers, as one file and sharded."""
    from transformers import Sapiens2Config as HfConfig
    from transformers import Sapiens2Model

    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    config = HfConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4)  # fmt: skip
    model = Sapiens2Model(config)
    model.save_pretrained(root / "one", save_original_format=False)
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    (root / "preprocessor_config.json").write_text(json.dumps({"do_resize": True}))
    return root


def _got(hub: FakeHub) -> list[str]:
    """The file names downloaded (GET .../resolve/...)."""
    return sorted(
        {r.split("/")[-1] for r in hub.requests if r.startswith("GET") and "/resolve/" in r}
    )


# --- matting ------------------------------------------------------------------------------


def test_matting_is_a_task_for_1b():
    file = hub_file("1b", "matting")
    assert (file.repo_id, file.filename) == (
        "facebook/sapiens2-matting-1b",
        "sapiens2_1b_matting.safetensors",
    )
    with pytest.raises(Sapiens2Error, match=r"no matting checkpoint for arch 0\.4b: matting "):
        hub_file("0.4b", "matting")


def test_a_matting_checkpoint_downloads_and_names_its_backbone(hub, tmp_path):
    state = {f"backbone.{k}": v for k, v in load_file(TINY).items()}
    state["decode_head.conv_matting.weight"] = torch.zeros(4, 32, 1, 1)
    served = tmp_path / "sapiens2_1b_matting.safetensors"
    save_file(state, served)
    hub.add("facebook/sapiens2-matting-1b", {served.name: served})
    path = resolve_checkpoint("1b", "matting")
    info = inspect_checkpoint(path)
    assert (info.task, info.prefix, info.config.embed_dim) == ("matting", "backbone.", 32)
    result = CliRunner().invoke(app, ["inspect", str(path)], catch_exceptions=False)
    assert "the backbone of a matting checkpoint" in result.stdout


def test_archs_lists_the_tasks_of_each_size():
    result = CliRunner().invoke(app, ["archs", "--json"], catch_exceptions=False)
    tasks = {r["arch"]: r["tasks"] for r in json.loads(result.stdout)}
    assert tasks["1b"] == ["pose", "seg", "normal", "pointmap", "matting"]
    assert tasks["0.4b"] == ["pose", "seg", "normal", "pointmap"] and tasks["0.1b"] == []


# --- a repository holding both layouts: the original file only --------------------------


@pytest.mark.parametrize("original", [FILE, "sapiens2_0.4b_pretrain_v2.safetensors"])
def test_both_layouts_download_the_original_file_only(hub, go_offline, saved, original):
    hub.add(
        REPO,
        {
            original: TINY,
            "model.safetensors": saved / "one" / "model.safetensors",
            "config.json": saved / "one" / "config.json",
            "preprocessor_config.json": saved / "preprocessor_config.json",
        },
    )
    path = resolve_checkpoint("0.4b")
    assert path.name == original and _got(hub) == [original]
    go_offline()
    assert resolve_checkpoint("0.4b") == path


# --- a repository holding only transformers' files ---------------------------------------


@pytest.mark.parametrize("form", ["one", "sharded"])
def test_a_fine_tuned_repo_downloads_then_loads_offline(hub, go_offline, saved, form):
    files = {p.name: p for p in (saved / form).iterdir()}
    files["preprocessor_config.json"] = saved / "preprocessor_config.json"
    hub.add(USER_REPO, files)
    folder = resolve_repo(USER_REPO)
    assert folder.is_dir() and "preprocessor_config.json" not in _got(hub)
    assert len(_got(hub)) == len(files) - 1  # config, weights (and index): nothing else
    expected = load_backbone(saved / form).state_dict()
    got = load_backbone(folder).state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())

    seen = len(hub.requests)
    go_offline()
    assert resolve_repo(USER_REPO) == folder
    weights = resolve_weights(None, f"hf://{USER_REPO}")  # what --checkpoint hf://... does
    assert weights.path == folder and weights.info.config == SMALL
    assert len(hub.requests) == seen
    assert checkpoint_sha256(folder) == checkpoint_sha256(saved / form)


def test_a_repo_with_an_original_file_gives_that_file(hub, tmp_path):
    path = write_random_checkpoint(tmp_path / "mine.safetensors", SMALL)
    hub.add(USER_REPO, {"mine.safetensors": path})
    assert resolve_repo(USER_REPO).name == "mine.safetensors"


def test_download_repo_prints_the_folder(hub, saved, tmp_path):
    hub.add(USER_REPO, {p.name: p for p in (saved / "one").iterdir()})
    result = CliRunner().invoke(
        app, ["download", "--repo", USER_REPO, "--local-dir", str(tmp_path / "w")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'w'}\n"
    assert inspect_checkpoint(tmp_path / "w").layout is not None


def test_a_peft_adapter_repo_is_refused_before_downloading(hub, tmp_path):
    adapter = tmp_path / "adapter_config.json"
    adapter.write_text("{}")
    hub.add(USER_REPO, {"adapter_config.json": adapter, "adapter_model.safetensors": TINY})
    with pytest.raises(Sapiens2Error, match=r"PEFT adapter without merged weights: merge"):
        resolve_repo(USER_REPO)
    assert _got(hub) == []


def test_offline_with_nothing_cached_names_the_download_command(hub, go_offline):
    go_offline()
    with pytest.raises(Sapiens2Error, match=rf"run `sapiens2 download --repo {USER_REPO}`"):
        resolve_repo(USER_REPO)
