"""Parameters and FLOPs counted on the meta device agree with the spec for every arch."""

from __future__ import annotations

import pytest
from zoo_spec import ZOO

from sapiens2_cli.bench import count_cost
from sapiens2_cli.model import get_config


@pytest.mark.parametrize("arch", list(ZOO))
def test_params_exact_and_flops_within_one_percent_at_training_size(arch):
    config = get_config(arch)
    cost = count_cost(config, *config.image_size)
    params, _, flops = ZOO[arch]
    assert cost.parameters == params
    assert cost.flops_per_image == pytest.approx(flops, rel=0.01)
    assert cost.tokens == 3081


@pytest.mark.parametrize("arch", ["0.1b", "0.4b", "5b"])  # no GQA, GQA, GQA with Dh = 76
def test_attention_is_counted_for_every_query_head(arch):
    """SDPA on meta (enable_gqa included) runs its math path: QK^T and AV, 2·N²·D each."""
    config = get_config(arch)
    cost = count_cost(config, 512, 384)
    n = config.num_tokens(512, 384)
    assert cost.flops_by_part["attention"] == config.num_layers * 4 * n * n * config.embed_dim


def test_the_4k_tokenizer_attention_is_counted_per_window():
    config = get_config("1b-4k")
    cost = count_cost(config, 256, 192)
    n = config.num_tokens(256, 192)
    windows, window_tokens = (256 // 64) * (192 // 64), 1 + 4 * 4
    d = config.embed_dim
    blocks = config.num_layers * 4 * n * n * d
    tokenizer = config.num_tokenizer_layers * windows * 4 * window_tokens**2 * d
    assert cost.flops_by_part["attention"] == blocks + tokenizer


def test_linear_layers_cost_two_flops_per_weight_per_token():
    """Without a tokenizer every Linear weight multiplies every token once."""
    config = get_config("0.4b")
    cost = count_cost(config, 256, 192)
    d, f = config.embed_dim, config.ffn_dim
    weights = sum(
        d * d * 2 + 2 * d * kv * config.head_dim + d * 2 * f + f * d
        for kv in config.block_kv_heads()
    )
    assert cost.flops_by_part["linear"] == 2 * cost.tokens * weights
