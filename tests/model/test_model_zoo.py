"""Every published arch has the spec's exact parameter and state-dict key counts, and the
zoo table that `sapiens2 archs` prints (model/zoo.py) is what the meta-device count gives."""

from __future__ import annotations

import pytest
import torch
from zoo_spec import ZOO

from sapiens2_cli import ARCHS, Sapiens2Config, Sapiens2Error, build_backbone, get_config
from sapiens2_cli.bench import count_cost
from sapiens2_cli.model.zoo import ZOO_COST

SLOW = ("1b-4k", "5b")  # about 5 s each to count


def test_zoo_lists_the_six_archs():
    assert list(ARCHS) == list(ZOO) == list(ZOO_COST)


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in ZOO]
)
def test_zoo_table_is_the_meta_device_count(arch):
    """Bug: the table drifting from the model (a changed layer, a stale figure)."""
    config = get_config(arch)
    cost = count_cost(config, *config.image_size)
    counted = (cost.parameters, cost.flops_per_image)
    assert ZOO_COST[arch] == counted, f"model/zoo.py: write {arch!r}: ZooCost{counted}"
    assert cost.parameters == ZOO[arch].params
    assert cost.flops_per_image == pytest.approx(ZOO[arch].flops, rel=5e-4)


@pytest.mark.parametrize("arch", list(ZOO))
def test_params_and_keys_match_spec_on_meta(arch):
    model = build_backbone(arch, device="meta")
    params, keys, _ = ZOO[arch]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "head_dim", "gqa_blocks"),
    [("0.1b", 64, 0), ("0.4b", 64, 8), ("0.8b", 80, 16), ("1b", 64, 24), ("5b", 76, 40)],
)
def test_head_dim_and_grouped_query_blocks(arch, head_dim, gqa_blocks):
    config = get_config(arch)
    kv = config.block_kv_heads()
    assert config.head_dim == head_dim
    assert kv[:8] == kv[-8:] == (config.num_heads,) * 8
    assert sum(k == config.num_heads // 2 for k in kv) == gqa_blocks


def test_training_sizes_and_token_counts():
    assert get_config("1b").num_tokens(1024, 768) == 3081
    assert get_config("1b-4k").image_size == (4096, 3072)
    assert get_config("1b-4k").num_tokens(4096, 3072) == 3081


@pytest.mark.parametrize("name", ["1B", "sapiens2_1b", "1b_4k", "sapiens2-pretrain-0.4b"])
def test_arch_name_aliases(name):
    assert get_config(name).name in ARCHS


def test_unknown_arch_lists_the_choices():
    with pytest.raises(Sapiens2Error, match=r"unknown arch '2b'.*0\.1b, 0\.4b"):
        get_config("2b")


def test_custom_config_runs_any_multiple_of_16():
    config = Sapiens2Config(embed_dim=48, num_layers=3, num_heads=3, ffn_dim=64)
    model = build_backbone(config)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 80))
    assert out.shape == (2, 9 + 3 * 5, 48)
    assert torch.isfinite(out).all()
