"""Token selection and layout, owned by the model (model/tokens.py, `forward_kept`), and the
row shape from numbers alone (`row_shape`), on the tiny weights: the kept
features against slicing `forward_layers` by hand, the row shape against what a run writes
for every tokens x layout x pool x project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from extract_helpers import FAST, extract
from paths import DATA, TINY

from sapiens2_cli.config.choices import Layout, TokenMode
from sapiens2_cli.model import load_backbone, normalize_pixels
from sapiens2_cli.model.tokens import row_shape, select_tokens
from sapiens2_cli.reduce.projection import Projection

LAYERS = (0, 8, -1)
#: tokens x layout as extract takes them (a map is of the patch tokens only).
MODES = [
    (TokenMode.PATCH, Layout.TOKENS),
    (TokenMode.PATCH, Layout.MAP),
    (TokenMode.ALL, Layout.TOKENS),
    (TokenMode.CLS, Layout.TOKENS),
    (TokenMode.MEAN, Layout.TOKENS),
]


def _by_hand(outputs: list[torch.Tensor], tokens: TokenMode, layout: Layout, grid) -> torch.Tensor:
    """The kept features of the documented token order [cls, 8 storage, h*w patches]."""
    h, w = grid
    per_layer = []
    for x in outputs:  # (B, 9 + h*w, D)
        patches = x[:, -h * w :]  # row-major
        if tokens == TokenMode.ALL:
            per_layer.append(x)
        elif tokens == TokenMode.CLS:
            per_layer.append(x[:, 0])
        elif tokens == TokenMode.MEAN:
            per_layer.append(patches.float().mean(1))
        elif layout == Layout.MAP:
            per_layer.append(patches.reshape(len(x), h, w, -1).permute(0, 3, 1, 2))
        else:
            per_layer.append(patches)
    return torch.stack(per_layer, dim=1)


@pytest.mark.parametrize(("tokens", "layout"), MODES)
def test_forward_kept_equals_the_blocks_outputs_sliced_by_hand(tokens, layout):
    model = load_backbone(TINY)
    pixels = normalize_pixels(torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8))
    with torch.inference_mode():
        kept = model.forward_kept(pixels, LAYERS, tokens, layout)
        outputs = model.forward_layers(pixels, LAYERS)
    want = _by_hand(outputs, tokens, layout, model.config.grid_size(64, 48))
    torch.testing.assert_close(kept, want)


def test_token_selection_keeps_the_compute_dtype():
    outputs = [torch.randn(2, 9 + 12, 8, dtype=torch.bfloat16) for _ in range(3)]
    assert select_tokens(outputs, "patch", "tokens", (4, 3)).dtype == torch.bfloat16
    mean = select_tokens(outputs, "mean", "tokens", (4, 3))
    assert mean.dtype == torch.float32  # accumulated in float32
    torch.testing.assert_close(mean, torch.stack(outputs, 1)[:, :, 9:].float().mean(2))


ROWS = [
    (tokens, layout, pool, k)
    for tokens, layout in MODES
    for pool in ((1, 2) if tokens in (TokenMode.PATCH, TokenMode.ALL) else (1,))
    for k in (None, 3)
]


@pytest.mark.parametrize(("tokens", "layout", "pool", "k"), ROWS)
def test_row_shape_is_the_shape_a_run_writes(tokens, layout, pool, k, tmp_path):
    """Catches: the writer sized for another shape than the device stage gives (the npy
    shard's header is written from the features themselves, not from row_shape)."""
    args = ["--tokens", tokens, "--layout", layout, "--pool", pool, "--layers", "0,17"]
    if k is not None:
        args += ["--project", _projection(tmp_path / "p.safetensors", k)]
    photo = next(p for p in sorted(DATA.iterdir()) if p.suffix == ".jpg")
    out = tmp_path / "out"
    result = extract(photo, *FAST, "--size", "64x64", "--format", "npy", *args, "-o", out)
    assert result.exit_code == 0, result.output
    (shard,) = out.glob("shard-*.features.npy")
    written = np.load(shard, mmap_mode="r").shape[1:]
    assert row_shape(tokens, layout, 2, (4, 4), 32, 9, pool=pool, k=k) == written


def _projection(path: Path, k: int) -> Path:
    """Any k x 32 projection: only its width matters here."""
    components = np.eye(k, 32, dtype=np.float32)
    Projection(np.zeros(32, np.float32), components, np.ones(k), 32.0).save(path)
    return path
