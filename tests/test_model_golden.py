"""The backbone reproduces the upstream implementation's outputs (tests/golden)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDEN
from safetensors.torch import load_file

from sapiens2_cli import Sapiens2Error, load_backbone
from sapiens2_cli.model.layers.rope import rope_periods, rope_tables

CASES = ["tiny", "tiny_wide", "tiny_4k"]


def _case(manifest: dict, name: str) -> dict:
    return next(c for c in manifest["cases"] if c["name"] == name)


@pytest.fixture(scope="module")
def models():
    return {
        "tiny_weights.safetensors": load_backbone(GOLDEN / "tiny_weights.safetensors"),
        "tiny_4k_weights.safetensors": load_backbone(GOLDEN / "tiny_4k_weights.safetensors"),
    }


@pytest.mark.parametrize("name", CASES)
def test_every_listed_layer_matches_golden(golden_manifest, models, name):
    case = _case(golden_manifest, name)
    model = models[case["weights"]]
    assert model.config.use_tokenizer == case["use_tokenizer"]
    io = load_file(GOLDEN / case["io"])
    with torch.no_grad():
        outputs = model.forward_layers(io["input"], case["out_indices"])
    for index, out in zip(case["out_indices"], outputs, strict=True):
        expected = io[f"layer_{index}"]
        assert out.shape == expected.shape == tuple(case["output_shape"])
        err = (out - expected).abs().max().item()
        assert err <= 1e-5, f"{name} layer {index}: max abs error {err:.2e}"


def test_negative_indices_and_forward(golden_manifest, models):
    case = _case(golden_manifest, "tiny")
    model = models[case["weights"]]
    io = load_file(GOLDEN / case["io"])
    with torch.no_grad():
        last, eighth, first = model.forward_layers(io["input"], [-1, -10, 0])
        final = model(io["input"])
    torch.testing.assert_close(last, io["layer_17"], atol=1e-5, rtol=0)
    torch.testing.assert_close(eighth, io["layer_8"], atol=1e-5, rtol=0)
    torch.testing.assert_close(first, io["layer_0"], atol=1e-5, rtol=0)
    torch.testing.assert_close(final, last, atol=0, rtol=0)


def test_only_the_last_block_is_final_normed(golden_manifest, models):
    model = models["tiny_weights.safetensors"]
    io = load_file(GOLDEN / _case(golden_manifest, "tiny")["io"])
    with torch.no_grad():
        (block16,) = model.forward_layers(io["input"], [16])
        normed = model.ln1(block16)
    # an intermediate block's RMS is not pinned to the norm weight; the final one is
    assert not torch.allclose(block16, normed, atol=1e-3)


def test_out_of_range_layer_is_refused(models):
    model = models["tiny_weights.safetensors"]
    with pytest.raises(IndexError):
        model.forward_layers(torch.zeros(1, 3, 32, 32), [18])


@pytest.mark.parametrize(("height", "width", "weights"), [(40, 48, "tiny"), (128, 96, "tiny_4k")])
def test_image_size_must_be_a_multiple(models, height, width, weights):
    model = models[f"{weights}_weights.safetensors"]
    with pytest.raises(Sapiens2Error, match="multiple of"):
        model(torch.zeros(1, 3, height, width))


def test_rope_in_float32_would_miss_the_golden_vectors(golden_manifest, models, monkeypatch):
    """The bf16 RoPE tables are load-bearing: a float32 RoPE moves the outputs visibly."""
    import sapiens2_cli.model.layers.rope as rope

    case = _case(golden_manifest, "tiny")
    io = load_file(GOLDEN / case["io"])
    monkeypatch.setattr(rope, "ROPE_DTYPE", torch.float32)
    with torch.no_grad():
        out = models[case["weights"]](io["input"])
    assert (out - io["layer_17"]).abs().max().item() > 1e-3


def test_rope_tables_are_bf16_with_spec_layout():
    periods = rope_periods(16)
    torch.testing.assert_close(periods, torch.tensor([1.0, 100**0.25, 100**0.5, 100**0.75]))
    sin, cos = rope_tables(periods, 2, 3)
    assert sin.dtype == cos.dtype == torch.bfloat16 and sin.shape == (6, 16)
    # both halves of Dh repeat the same angles; the first quarter holds row angles
    torch.testing.assert_close(sin[:, :8], sin[:, 8:])
    assert torch.equal(sin[0, :4], sin[2, :4]) and not torch.equal(sin[0, 4:8], sin[2, 4:8])


@pytest.mark.parametrize("name", CASES)
def test_bf16_autocast_keeps_patch_features(golden_manifest, models, name):
    case = _case(golden_manifest, name)
    model = models[case["weights"]]
    io = load_file(GOLDEN / case["io"])
    with torch.no_grad():
        reference = model(io["input"])[:, 9:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(io["input"])[:, 9:]
    cosine = F.cosine_similarity(mixed.float().flatten(1), reference.flatten(1), dim=1)
    assert cosine.min().item() >= 0.999, cosine


def test_bf16_weights_run(golden_manifest):
    case = _case(golden_manifest, "tiny")
    model = load_backbone(GOLDEN / case["weights"], dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    io = load_file(GOLDEN / case["io"])
    with torch.no_grad():
        out = model(io["input"])
    assert out.dtype == torch.bfloat16
    cosine = F.cosine_similarity(out.float()[:, 9:].flatten(1), io["layer_17"][:, 9:].flatten(1))
    assert cosine.min().item() >= 0.999


def test_grouped_query_heads_repeat_interleave():
    """Bug: tiling kv heads (query head h -> kv head h % kv) instead of interleaving them
    (h -> h // (heads / kv)). The golden model's GQA blocks have one kv head, where both
    give the same numbers; with two kv heads for four query heads they differ."""
    from sapiens2_cli.model.layers.attention import Attention

    torch.manual_seed(0)
    heads, kv, dh = 4, 2, 8
    layer = Attention(heads * dh, heads, kv)
    with torch.no_grad():
        for norm in (layer.q_norm, layer.k_norm, layer.gamma):
            norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 7, heads * dh)
        got = layer(x)

        def split(linear, n):  # (B, N, n*Dh) -> (B, n, N, Dh)
            return linear(x).view(2, 7, n, dh).transpose(1, 2)

        def rms(t, weight):
            return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

        q = rms(split(layer.wq, heads), layer.q_norm.weight)
        k = rms(split(layer.wk, kv), layer.k_norm.weight)
        v = split(layer.wv, kv)
        # the spec: kv head j serves query heads 2j and 2j+1 (repeat-interleave)
        k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)
        merged = (weights @ v).transpose(1, 2).reshape(2, 7, heads * dh)
        expected = layer.proj(merged) * layer.gamma.weight
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
