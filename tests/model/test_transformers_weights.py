"""Weights written by Hugging Face transformers (`Sapiens2Model.save_pretrained`), held to
the real peer: transformers' own Sapiens2 model, built at a tiny custom size.

(a) a save_pretrained folder gives exactly the features of the same weights in upstream
format (written by transformers' own reverse conversion, so the name table is checked
against it, not against itself); (b) the features equal `Sapiens2Model`'s patch tokens
within the bf16-RoPE difference (docs/model.md); (c) upstream -> from_pretrained ->
save_pretrained -> this tool gives the upstream features exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from checkpoints import write_random_checkpoint
from safetensors.torch import load_file, save_file

from sapiens2_cli import Sapiens2Config, Sapiens2Error, inspect_checkpoint, load_backbone
from sapiens2_cli.model.layers.rope import rope_periods
from sapiens2_cli.model.transformers_format import NAME_TABLE, transformers_names

transformers = pytest.importorskip("transformers")  # in the dev extra: runs in CI
from transformers import Sapiens2Config as HfConfig  # noqa: E402
from transformers import Sapiens2Model  # noqa: E402

#: D=64, 4 heads (Dh 16), 4 blocks with kv heads 4, 2, 2, 4: every kind of block.
HF_SIZE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_attention_heads=2,
    num_first_full_attention_layers=1,
    num_last_full_attention_layers=1,
    image_size=[64, 48],
)
OURS = Sapiens2Config(embed_dim=64, num_layers=4, num_heads=4, ffn_dim=96, kv_heads=(4, 2, 2, 4))
#: Max relative difference allowed between this tool's and Sapiens2Model's patch tokens
#: (max |a - b| / max |b|), all of it the RoPE's bf16 here and fp32 there; measured 1.4e-5
#: on these weights, 4.2e-8 with the RoPE in fp32 here too (docs/model.md).
PEER_RTOL = 2e-4


def _random_peer(seed: int = 0) -> Sapiens2Model:
    """Sapiens2Model with every parameter random (layer scale and norms included, so no
    tensor is a constant that would hide a swapped name)."""
    torch.manual_seed(seed)
    model = Sapiens2Model(HfConfig(**HF_SIZE)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name:
                p.uniform_(0.05, 0.2)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.02)
    return model


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """The peer model and its folders: save_pretrained's default (upstream names, no rope
    periods), transformers' own names, and sharded."""
    root = tmp_path_factory.mktemp("hf")
    model = _random_peer()
    model.save_pretrained(root / "default")
    model.save_pretrained(root / "hf_names", save_original_format=False)
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    # The same weights in upstream format: transformers' reverse conversion plus the
    # periods buffer as the upstream module stores it.
    state = load_file(root / "default" / "model.safetensors")
    state["rope_embed.periods"] = rope_periods(16)
    save_file(state, root / "upstream.safetensors")
    return model, root


@pytest.fixture(scope="module")
def pixels():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 48)


def _features(path, pixels, dtype=torch.float32):
    with torch.no_grad():
        return load_backbone(path, dtype=dtype)(pixels.to(dtype))[:, 9:]


def test_the_folder_is_read_as_its_config_says(peer):
    _, root = peer
    info = inspect_checkpoint(root / "default")
    assert info.config == OURS and info.arch is None and info.layout is not None
    assert info.num_parameters == inspect_checkpoint(root / "upstream.safetensors").num_parameters


@pytest.mark.parametrize("form", ["default", "hf_names", "sharded", "lone_file", "index_file"])
def test_a_equal_to_the_upstream_features_exactly(peer, pixels, form):
    _, root = peer
    path = {
        "lone_file": root / "hf_names" / "model.safetensors",
        "index_file": root / "sharded" / "model.safetensors.index.json",
    }.get(form, root / form)
    if form == "sharded":
        assert len(list(path.glob("model-*-of-*.safetensors"))) > 1
    expected = _features(root / "upstream.safetensors", pixels)
    assert torch.equal(_features(path, pixels), expected)


def test_b_equal_to_the_peer_within_the_rope_difference(peer, pixels, monkeypatch):
    model, root = peer
    with torch.no_grad():
        theirs = model(pixel_values=pixels).last_hidden_state[:, 9:]
    ours = _features(root / "hf_names", pixels)
    relative = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert 0 < relative < PEER_RTOL
    # All of it is the RoPE: computed in fp32 here too, the two agree to fp32 rounding.
    monkeypatch.setattr("sapiens2_cli.model.layers.rope.ROPE_DTYPE", torch.float32)
    fp32_rope = _features(root / "hf_names", pixels)
    assert ((fp32_rope - theirs).abs().max() / theirs.abs().max()).item() < 1e-6


def test_c_round_trip_through_transformers_gives_the_upstream_features(tmp_path, pixels):
    upstream = write_random_checkpoint(tmp_path / "up.safetensors", OURS, seed=3)
    folder = tmp_path / "to_hf"
    HfConfig(**HF_SIZE).save_pretrained(folder)
    shutil.copy(upstream, folder / "model.safetensors")
    model = Sapiens2Model.from_pretrained(folder).eval()
    model.save_pretrained(tmp_path / "back")
    model.save_pretrained(tmp_path / "back_hf", save_original_format=False)
    expected = _features(upstream, pixels)
    assert torch.equal(_features(tmp_path / "back", pixels), expected)
    assert torch.equal(_features(tmp_path / "back_hf", pixels), expected)


def test_loading_stays_lean(peer):
    """Every tensor but the joined w12 is a view of the file mapping at fp32."""
    _, root = peer
    model = load_backbone(root / "hf_names")
    state = model.state_dict()
    storages = {
        n: t.untyped_storage().data_ptr() for n, t in state.items() if n != "rope_embed.periods"
    }
    joined = {storages[n] for n in storages if ".ffn.w12." in n}
    mapped = {storages[n] for n in storages if ".ffn.w12." not in n}
    assert len(joined) == 1 and len(mapped) == 1 and joined != mapped


def test_the_name_table_covers_every_upstream_key_once():
    keys = load_backbone.__globals__["Sapiens2Backbone"](OURS, device="meta").state_dict()
    names = [n for k in keys if k != "rope_embed.periods" for n in transformers_names(k)]
    assert len(names) == len(set(names)) == len(keys) - 1 + OURS.num_layers * 2
    assert len(NAME_TABLE) == 16
    peer_keys = set(Sapiens2Model(HfConfig(**HF_SIZE)).state_dict())
    assert set(names) == peer_keys


def test_task_model_backbone_and_task(tmp_path):
    from transformers import Sapiens2ForImageMatting

    config = HfConfig(
        **HF_SIZE,
        num_labels=4,
        head_config={"upsample_out_channels": [8], "conv_out_channels": [8]},
    )
    Sapiens2ForImageMatting(config).save_pretrained(tmp_path / "m")
    Sapiens2ForImageMatting(config).save_pretrained(tmp_path / "n", save_original_format=False)
    assert inspect_checkpoint(tmp_path / "m").prefix == "backbone."
    assert inspect_checkpoint(tmp_path / "m").task == "matting"
    info = inspect_checkpoint(tmp_path / "n")
    assert (info.prefix, info.task, info.config) == ("model.", "matting", OURS)
    # the lone upstream-named file tells its task by its head
    assert inspect_checkpoint(tmp_path / "m" / "model.safetensors").task == "matting"


# --- bad input: one line naming the file and what to do, before any work -----------------


def _edit_config(folder, **fields):
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


def test_another_model_type(peer, tmp_path):
    folder = shutil.copytree(peer[1] / "default", tmp_path / "vit")
    _edit_config(folder, model_type="vit")
    with pytest.raises(Sapiens2Error, match=r"config\.json describes a transformers 'vit' model"):
        inspect_checkpoint(folder)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hidden_size": 128}, r"says hidden_size = 128, but the weights have 64"),
        ({"num_key_value_heads_per_layer": [4, 4, 4, 4]}, r"num_key_value_heads_per_layer"),
        ({"hidden_act": "gelu"}, r"sets hidden_act = 'gelu'; a Sapiens2 backbone has 'silu'"),
    ],
)
def test_a_config_that_disagrees_with_the_tensors(peer, tmp_path, fields, message):
    folder = shutil.copytree(peer[1] / "default", tmp_path / "bad")
    _edit_config(folder, **fields)
    with pytest.raises(Sapiens2Error, match=message):
        load_backbone(folder)


def test_an_index_naming_a_missing_shard(peer, tmp_path):
    folder = shutil.copytree(peer[1] / "sharded", tmp_path / "s")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(Sapiens2Error, match=rf"names the shard {shard.name}, which is missing"):
        inspect_checkpoint(folder)


def test_a_peft_adapter_without_merged_weights(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    save_file(
        {"base_model.model.x.lora_A.weight": torch.zeros(2, 2)},
        folder / "adapter_model.safetensors",
    )
    with pytest.raises(Sapiens2Error, match=r"PEFT adapter without merged weights: merge"):
        inspect_checkpoint(folder)


@pytest.mark.slow  # two subprocesses that import torch
def test_cli_inspect_a_folder_and_a_bad_one(peer, tmp_path):
    _, root = peer
    run = [sys.executable, "-m", "sapiens2_cli", "inspect", "--json"]
    proc = subprocess.run([*run, str(root / "sharded")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    fields = json.loads(proc.stdout)
    assert fields["layout"] == "transformers" and fields["embed_dim"] == 64
    folder = shutil.copytree(root / "default", tmp_path / "vit")
    _edit_config(folder, model_type="vit")
    proc = subprocess.run([*run, str(folder)], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "'vit' model" in lines[0]


def test_extract_from_a_folder_writes_the_upstream_features(peer, tmp_path):
    from paths import DATA

    from sapiens2_cli import extract, open_features

    _, root = peer
    common = {"size": (64, 48), "precision": "fp32", "dtype": "float32"}
    image = [str(DATA / "chelsea.jpg")]
    extract(image, tmp_path / "hf.h5", checkpoint=root / "hf_names", **common)
    extract(image, tmp_path / "up.h5", checkpoint=root / "upstream.safetensors", **common)
    hf, up = open_features(tmp_path / "hf.h5"), open_features(tmp_path / "up.h5")
    assert torch.equal(torch.as_tensor(hf.read([0])), torch.as_tensor(up.read([0])))
    assert hf.settings["checkpoint"] == "hf_names" and len(hf.settings["checkpoint_sha256"]) == 64
