"""The viz building blocks on made-up arrays: grids, PCA, colours, pictures, names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.viz.colours import fit_basis, fit_colouring
from sapiens2_cli.viz.patches import GridSpec, grid_spec, image_region, patch_grid
from sapiens2_cli.viz.render import contact_sheet, note_panel, panel_size, render_components
from sapiens2_cli.viz.run import picture_name

H, W, D = 6, 4, 16  # patch grid and feature width of the made-up images


def _settings(**changes) -> dict:
    settings = {
        "layers": [3, 7],
        "tokens": "patch",
        "layout": "tokens",
        "grid_size": [H, W],
        "image_size": [H * 16, W * 16],
        "embed_dim": D,
    }
    return settings | changes


def _subject(seed: int = 0, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, D) features: a 'subject' block in the middle that differs from the rest along
    one direction, plus small noise; and the bool (H, W) subject mask."""
    g = torch.Generator().manual_seed(seed)
    subject = torch.zeros(H, W, dtype=torch.bool)
    subject[2:4, 1:3] = True
    direction = torch.randn(D, generator=g)
    x = torch.randn(D, generator=g) + noise * torch.randn(H, W, D, generator=g)
    return x + subject[..., None] * 3 * direction, subject


def _colours(picture: Image.Image) -> set[tuple[int, ...]]:
    return {tuple(c) for c in np.unique(np.asarray(picture).reshape(-1, 3), axis=0).tolist()}


def _all_patches(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spec = GridSpec(0, "tokens", (H, W), (H * 16, W * 16))
    return image_region(spec, None).patches(grid)


# --- patch grids --------------------------------------------------------------------------


def test_tokens_all_and_map_rows_give_the_same_grid():
    grid, _ = _subject()
    patch_row = np.stack([np.zeros((H * W, D)), grid.reshape(H * W, D).numpy()])  # 2 layers
    all_row = np.concatenate([np.full((2, 9, D), 7.0), patch_row], axis=1)  # cls + storage
    map_row = patch_row.reshape(2, H, W, D).transpose(0, 3, 1, 2)
    for tokens, layout, row in [
        ("patch", "tokens", patch_row),
        ("all", "tokens", all_row),
        ("patch", "map", map_row),
    ]:
        spec = grid_spec(_settings(tokens=tokens, layout=layout), None, Path("f.h5"))
        assert spec.layer_index == 1  # the last stored layer by default
        torch.testing.assert_close(
            patch_grid(row.astype(np.float16), spec), grid, atol=2e-3, rtol=1e-3
        )


def test_layer_is_picked_by_block_index():
    assert grid_spec(_settings(), 3, Path("f.h5")).layer_index == 0
    with pytest.raises(Sapiens2Error, match=r"holds layer\(s\) 3, 7, not 5: pick one with --layer"):
        grid_spec(_settings(), 5, Path("f.h5"))


@pytest.mark.parametrize("tokens", ["cls", "mean"])
def test_pooled_features_are_refused(tokens):
    with pytest.raises(Sapiens2Error, match=f"pooled features \\(--tokens {tokens}\\)"):
        grid_spec(_settings(tokens=tokens), None, Path("f.h5"))


def test_a_row_that_does_not_fit_the_grid_is_refused():
    spec = grid_spec(_settings(), None, Path("f.h5"))
    with pytest.raises(Sapiens2Error, match="cannot hold the 6x4 grid"):
        patch_grid(np.zeros((2, H * W - 1, D)), spec)


def test_letterbox_region_keeps_the_patches_on_the_image():
    # 96x64 input, 16 px patches; a 48 px tall image pasted at rows 24..72: the centres of
    # patch rows 1-3 (24, 40, 56) are on it, those of rows 0 and 4 (8, 72) are not.
    spec = grid_spec(_settings(resize="letterbox"), None, Path("f.h5"))
    region = image_region(spec, np.array([24, 0, 48, 64]))
    assert region.rows == (1, 3) and region.cols == (0, 3)
    grid = torch.arange(H * W, dtype=torch.float32).reshape(H, W, 1)
    patches, ring = region.patches(grid)
    assert patches[:, 0].tolist() == list(range(4, 16))
    assert ring.tolist() == [True] * 4 + [True, False, False, True] + [True] * 4
    thin = image_region(spec, np.array([40, 30, 2, 2]))  # no centre inside: the one it is on
    assert thin.rows == (2, 2) and thin.cols == (1, 1)


# --- PCA ------------------------------------------------------------------------------------


def test_first_component_separates_the_subject_with_the_border_low():
    grid, subject = _subject()
    patches, ring = _all_patches(grid)
    basis = fit_basis(patches, 3, patches[ring])
    first = basis.scaled(patches)[:, 0].reshape(H, W)
    assert first[subject].min() > 0.9 and first[~subject].max() < 0.1
    # the sign rule, not chance, decides: negated features give the same picture
    negated = fit_basis(-patches, 3, -patches[ring])
    torch.testing.assert_close(negated.scaled(-patches)[:, 0], basis.scaled(patches)[:, 0])


def test_randomized_fit_matches_an_exact_svd_and_repeats():
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([10.0, 6.0, 3.0] + [0.3] * 61)
    x = (
        torch.randn(500, 64, generator=g)
        * scales
        @ torch.linalg.qr(torch.randn(64, 64, generator=g))[0]
    )
    basis = fit_basis(x, 3, x[:20])
    _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    cosines = (basis.components * vh[:3].T).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(3), atol=1e-4, rtol=0)
    again = fit_basis(x, 3, x[:20])
    assert torch.equal(again.components, basis.components)


def test_scaling_is_robust_to_outliers_and_clamped():
    x = torch.zeros(1000, 2)
    x[:, 0] = torch.linspace(0, 1, 1000)
    x[0, 0] = -1e4  # one wild patch
    basis = fit_basis(x, 1, x[-10:])
    values = basis.scaled(x)[:, 0]
    assert values.min() == 0 and values.max() == 1
    assert 0.4 < float(values[500]) < 0.6  # the bulk still spans the range


def test_fewer_directions_than_components_give_constant_channels():
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
    values = fit_basis(x, 3, x[:2]).scaled(x)
    assert values[:, 2].eq(0).all() and values[:, 0].max() == 1
    one_patch = fit_basis(x[:1], 3, x[:1])  # a 1x1 grid: nothing to find, nothing fails
    assert one_patch.scaled(x[:1]).eq(0).all()


def test_foreground_threshold_adds_a_mask_and_fits_colours_on_the_subject():
    grid, subject = _subject()
    patches, ring = _all_patches(grid)
    colouring = fit_colouring(patches, patches[ring], 3, 0.5)
    values = colouring.apply(patches)
    assert values.shape == (H * W, 4)
    assert torch.equal(values[:, 3].reshape(H, W) > 0.5, subject)
    torch.testing.assert_close(colouring.colour.mean, patches[subject.flatten()].mean(0))
    without = fit_colouring(patches, patches[ring], 1, None)
    assert without.mask is None and without.apply(patches).shape == (H * W, 1)


# --- pictures ------------------------------------------------------------------------------


def test_panel_size_keeps_the_original_aspect():
    assert panel_size((3000, 4000), 512) == (384, 512)
    assert panel_size((4000, 3000), 512) == (512, 384)
    assert panel_size((10, 1000), 100) == (1, 100)


def test_render_draws_only_the_letterbox_content_at_its_size():
    spec = grid_spec(_settings(resize="letterbox"), None, Path("f.h5"))
    region = image_region(spec, np.array([32, 0, 32, 64]))  # patch rows 2..3 exactly
    values = torch.zeros(H, W, 3)
    values[..., 0] = 1  # padding: red
    values[2:4, :, 0] = 0
    values[2:4, :, 1] = 1  # image: green
    picture, kept = render_components(values, region, spec.image_size, (50, 100), None)
    assert picture.size == (100, 50) and picture.mode == "RGB" and kept == 1
    assert _colours(picture) == {(0, 255, 0)}


def test_render_blacks_out_the_background_and_greys_one_component():
    spec = grid_spec(_settings(), None, Path("f.h5"))
    values = torch.full((H, W, 2), 0.5)  # one colour component + the mask
    values[..., 1] = 0
    values[2:4, 1:3, 1] = 1
    picture, kept = render_components(
        values, image_region(spec, None), spec.image_size, (96, 64), 0.5
    )
    pixels = np.asarray(picture)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[48, 32].tolist() == [128, 128, 128]
    assert 0.1 < kept < 0.25  # the 2x2 of 6x4 patches, softened at the edges


def test_note_panel_and_contact_sheet():
    note = note_panel((60, 80), "image not found: photos/a/very/long/path/to/IMG_0001.jpg")
    assert note.size == (80, 60) and len(_colours(note)) > 1  # some text is drawn
    tall = Image.new("RGB", (30, 60), "red")
    wide = Image.new("RGB", (120, 60), "blue")
    sheet = contact_sheet([(tall, "a.png"), (wide, "b.png"), (tall, "c.png")], 64)
    cell_w = 128  # cells take the widest aspect (2:1); no picture is enlarged
    assert sheet.size == (2 * cell_w, 2 * (60 + 16))  # 3 pictures: 2 columns, 2 rows
    assert sheet.getpixel((cell_w // 2, 32)) == (255, 0, 0)
    assert sheet.getpixel((cell_w + cell_w // 2, 32)) == (0, 0, 255)


def test_picture_names_are_unique_readable_and_safe():
    names = [
        picture_name(3, "photos/a/IMG_0001.JPG", 4),
        picture_name(17, "photos/b/IMG_0001.JPG", 4),
        picture_name(5, 'déjà vu/été: "rouge"?.png', 2),
        picture_name(0, "..\\..\\.hidden", 1),
    ]
    assert names == ["0003_IMG_0001.png", "0017_IMG_0001.png", "05_été_rouge.png", "0_hidden.png"]
