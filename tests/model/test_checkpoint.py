"""Loading checkpoints: arch inferred from shapes, task files, every way a file can be bad."""

from __future__ import annotations

import pytest
import torch
from checkpoints import write_header_only_checkpoint, write_random_checkpoint
from extract_helpers import sapiens2_subprocess
from paths import GOLDEN
from safetensors.torch import load_file, save_file

from sapiens2_cli import ARCHS, Sapiens2Config, Sapiens2Error, inspect_checkpoint, load_backbone


@pytest.fixture(scope="module")
def golden_io():
    return load_file(GOLDEN / "tiny_io.safetensors")


def _forward(model, io):
    with torch.no_grad():
        return model(io["input"])


@pytest.mark.parametrize("arch", list(ARCHS))
def test_zoo_arch_is_recognised_from_the_header(tmp_path, arch):
    path = write_header_only_checkpoint(tmp_path / "w.safetensors", arch)
    info = inspect_checkpoint(path)
    assert info.arch == arch
    assert info.config == ARCHS[arch]
    assert info.config.image_size == ARCHS[arch].image_size
    assert inspect_checkpoint(path, arch=arch.upper()).arch == arch


def test_task_checkpoint_loads_its_backbone(tmp_path, tiny_checkpoint, golden_io):
    state = {f"backbone.{k}": v for k, v in load_file(tiny_checkpoint).items()}
    state["decode_head.conv.weight"] = torch.zeros(4, 32, 1, 1)
    path = tmp_path / "pose.safetensors"
    save_file(state, path)
    model = load_backbone(path)
    assert model.checkpoint.prefix == "backbone."
    plain = load_backbone(tiny_checkpoint)  # the same weights without the prefix
    torch.testing.assert_close(
        _forward(model, golden_io), _forward(plain, golden_io), atol=0, rtol=0
    )


def test_zoo_task_checkpoint_header(tmp_path):
    head = {"decode_head.final.weight": [17, 1536, 1, 1]}
    path = write_header_only_checkpoint(tmp_path / "p.safetensors", "1b", "backbone.", head)
    assert inspect_checkpoint(path, arch="1b").prefix == "backbone."


def test_custom_size_with_its_own_gqa_pattern_round_trips(tmp_path):
    config = Sapiens2Config(
        embed_dim=64, num_layers=4, num_heads=4, ffn_dim=96, kv_heads=(4, 1, 2, 4)
    )
    path = write_random_checkpoint(tmp_path / "c.safetensors", config)
    info = inspect_checkpoint(path)
    assert info.arch is None and info.config == config
    model = load_backbone(path)
    assert [b.attn.num_kv_heads for b in model.blocks] == [4, 1, 2, 4]


def test_arch_mismatch_says_what_the_file_is(tmp_path):
    path = write_header_only_checkpoint(tmp_path / "w.safetensors", "0.4b")
    with pytest.raises(Sapiens2Error, match=r"holds arch 0\.4b .*not arch 1b.*--arch 0\.4b"):
        inspect_checkpoint(path, arch="1b")


def test_load_casts_to_the_target_dtype_and_keeps_rope_periods(tiny_checkpoint, golden_io):
    model = load_backbone(tiny_checkpoint, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in model.parameters())
    assert model.rope_embed.periods.dtype == torch.float32
    assert not model.training


def test_missing_file(tmp_path):
    with pytest.raises(Sapiens2Error, match="does not exist"):
        load_backbone(tmp_path / "nope.safetensors")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(Sapiens2Error, match="is a folder"):
        load_backbone(tmp_path)


@pytest.mark.parametrize("name", ["w.pt", "w.bin", "w.pth"])
def test_pickles_are_never_unpickled(tmp_path, name):
    path = tmp_path / name
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(Sapiens2Error, match=r"never unpickled.*safetensors"):
        load_backbone(path)


def test_pickle_renamed_to_safetensors_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(Sapiens2Error, match="never unpickled"):
        load_backbone(path)


@pytest.mark.parametrize("cut", [0, 4, 100, -1000])
def test_truncated_file(tmp_path, tiny_checkpoint, cut):
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "w.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(Sapiens2Error, match="not a readable safetensors file"):
        load_backbone(path)


def test_corrupt_header(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes((24).to_bytes(8, "little") + b'{"a": not json at all!}')
    with pytest.raises(Sapiens2Error, match="not a readable safetensors file"):
        load_backbone(path)


def test_not_a_backbone_names_its_keys(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(Sapiens2Error, match=r"not a Sapiens2 backbone.*encoder\.weight"):
        load_backbone(path)


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_checkpoint):
    state = load_file(tiny_checkpoint)
    del state["blocks.3.ln2.weight"]
    state["blocks.3.extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file(state, path)
    with pytest.raises(
        Sapiens2Error, match=r"missing blocks\.3\.ln2\.weight; unexpected blocks\.3\.extra"
    ):
        load_backbone(path)


def test_wrong_shape_is_named(tmp_path, tiny_checkpoint):
    state = load_file(tiny_checkpoint)
    state["blocks.5.ffn.w3.bias"] = torch.zeros(31)
    path = tmp_path / "w.safetensors"
    save_file(state, path)
    with pytest.raises(Sapiens2Error, match=r"blocks\.5\.ffn\.w3\.bias has shape \[31\]"):
        load_backbone(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "missing.safetensors"], "does not exist"),
        (["inspect", "{golden}/tiny_io.safetensors"], "not a Sapiens2 backbone"),
        (["inspect", "{golden}/tiny_weights.safetensors", "--arch", "0.4b"], "not arch 0.4b"),
    ],
)
def test_cli_bad_checkpoint_is_one_line_without_traceback(args, message):
    args = [a.format(golden=GOLDEN) for a in args]
    proc = sapiens2_subprocess(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cli_inspect_json(tiny_4k_checkpoint):
    proc = sapiens2_subprocess("inspect", tiny_4k_checkpoint, "--json", check=True)
    import json

    fields = json.loads(proc.stdout)
    assert fields["tokenizer_layers"] == 2 and fields["parameters"] == 361_824


def test_the_gpu_route_gives_the_cpu_tensors(tmp_path, tiny_checkpoint):
    """The GPU loading route (pinned staging buffer, cast after the copy), run on the CPU,
    on a task file mixing bf16 and float32 tensors."""
    from sapiens2_cli.model.load import _entries, _send

    state = {f"backbone.{k}": v for k, v in load_file(tiny_checkpoint).items()}
    state["backbone.cls_token"] = state["backbone.cls_token"].bfloat16()  # 32 x 2 bytes
    path = tmp_path / "task.safetensors"
    save_file(state, path)
    info = inspect_checkpoint(path)
    mapped = load_backbone(path, dtype=torch.float16).state_dict()
    target = {n: t.dtype for n, t in mapped.items()}
    data = {path: torch.from_file(str(path), size=path.stat().st_size, dtype=torch.uint8)}
    staged = _send(data, _entries(info, target), target, torch.device("cpu"))
    assert staged.keys() == mapped.keys()
    for name, tensor in mapped.items():
        expected = state[f"backbone.{name}"].to(tensor.dtype)
        assert torch.equal(tensor, expected) and torch.equal(staged[name], expected), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weights_are_one_allocation_in_the_target_dtype_or_the_mapping(tiny_checkpoint, dtype):
    threads = torch.get_num_threads()
    model = load_backbone(tiny_checkpoint, dtype=dtype)
    assert torch.get_num_threads() == threads  # the one-thread conversion gives them back
    weights = [t for n, t in model.state_dict().items() if n != "rope_embed.periods"]
    storages = {t.untyped_storage().data_ptr() for t in weights}
    assert len(storages) == 1 and {t.dtype for t in weights} == {dtype}
    expected = load_file(tiny_checkpoint)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name].to(tensor.dtype)), name


def test_a_dtype_the_loader_lacks_is_one_line(tmp_path, tiny_checkpoint):
    state = load_file(tiny_checkpoint)
    state["cls_token"] = state["cls_token"].to(torch.int32)
    save_file(state, tmp_path / "int.safetensors")
    with pytest.raises(Sapiens2Error, match=r"cls_token is stored as I32, not a floating"):
        load_backbone(tmp_path / "int.safetensors")


@pytest.mark.gpu
def test_load_to_gpu_matches_cpu(tiny_checkpoint, golden_io):
    model = load_backbone(tiny_checkpoint, device="cuda")
    with torch.no_grad():
        out = model(golden_io["input"].cuda()).cpu()
    torch.testing.assert_close(out, golden_io["layer_17"], atol=1e-4, rtol=0)
