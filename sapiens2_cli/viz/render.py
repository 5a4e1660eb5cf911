"""Pictures: component values on the patch grid -> an RGB image at the original aspect,
the input image beside it, and a contact sheet of many results."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from sapiens2_cli.viz.patches import Region

_NOTE_BACKGROUND = (96, 96, 96)
_SHEET_BACKGROUND = (255, 255, 255)
_CAPTION_HEIGHT = 16


def panel_size(original: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) of a picture with the original aspect and the given longer side."""
    height, width = original
    scale = long_side / max(height, width, 1)
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_components(
    values: torch.Tensor,
    region: Region,
    image_size: tuple[int, int],
    size: tuple[int, int],
    threshold: float | None,
) -> tuple[Image.Image, float]:
    """Draw (h, w, C) values in [0, 1] as an RGB picture of `size` (height, width).

    Channels are the colour components (1: grey, 3: RGB), then the mask component when
    `threshold` is set. Only the image's own region (the letterbox content box) is drawn,
    stretched back to the original aspect; values are interpolated bilinearly between patch
    centres. Pixels whose mask value is not above the threshold are black.
    Returns the picture and the fraction of its pixels kept as foreground.
    """
    out = _resample(values.permute(2, 0, 1), region, image_size, size)  # (C, H', W')
    k = out.shape[0] - (threshold is not None)
    rgb = out[:k].expand(3, -1, -1) if k == 1 else out[:k]
    kept = 1.0
    if threshold is not None:
        foreground = out[k] > threshold
        rgb = rgb * foreground
        kept = float(foreground.float().mean())
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB"), kept


def _resample(
    grid: torch.Tensor, region: Region, image_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """(C, h, w) values over the model input -> (C, H', W') over the region's box only.

    Only the patches on the image are sampled (beyond their outer centres the edge values
    hold), so letterbox padding never bleeds into the picture.
    """
    step_y, step_x = image_size[0] / grid.shape[1], image_size[1] / grid.shape[2]
    (r0, r1), (c0, c1) = region.rows, region.cols
    top, left, box_h, box_w = region.box
    out_h, out_w = size
    # Output pixel centres in input pixels, then in grid_sample's [-1, 1] over those patches.
    y = top + (torch.arange(out_h) + 0.5) * (box_h / out_h)
    x = left + (torch.arange(out_w) + 0.5) * (box_w / out_w)
    gy = 2 * (y - r0 * step_y) / ((r1 - r0 + 1) * step_y) - 1
    gx = 2 * (x - c0 * step_x) / ((c1 - c0 + 1) * step_x) - 1
    where = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].float()
    on_image = grid[:, r0 : r1 + 1, c0 : c1 + 1].float()
    out = F.grid_sample(
        on_image[None], where, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0]  # (C, H', W')


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two pictures of the same height in one, left then right."""
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return both


def note_panel(size: tuple[int, int], text: str) -> Image.Image:
    """A grey picture of `size` (height, width) saying `text`, where an input image would be."""
    height, width = size
    panel = Image.new("RGB", (width, height), _NOTE_BACKGROUND)
    font = ImageFont.load_default()
    chars_per_line = max(8, int(width / max(font.getlength("x"), 1)) - 2)
    lines = textwrap.wrap(text, chars_per_line, break_long_words=True) or [""]
    ImageDraw.Draw(panel).multiline_text(
        (width / 2, height / 2), "\n".join(lines), fill="white", font=font, anchor="mm"
    )
    return panel


def contact_sheet(pictures: list[tuple[Image.Image, str]], cell: int) -> Image.Image:
    """Many pictures on one roughly square sheet: each fitted into a cell `cell` pixels tall
    (wider for wide pictures), rows as tall as their tallest picture, captions below."""
    if not pictures:
        raise ValueError("a contact sheet needs at least one picture")
    aspect = max(p.width / p.height for p, _ in pictures)  # wide cells for side-by-side
    cell_w, cell_h = round(cell * max(aspect, 1.0)), cell
    columns = max(1, min(len(pictures), math.ceil(math.sqrt(len(pictures) * cell_h / cell_w))))
    tiles = []
    for picture, _ in pictures:
        tile = picture.copy()
        tile.thumbnail((cell_w, cell_h), Image.Resampling.LANCZOS)
        tiles.append(tile)
    rows = [range(i, min(i + columns, len(tiles))) for i in range(0, len(tiles), columns)]
    heights = [max(tiles[i].height for i in row) for row in rows]
    sheet_h = sum(heights) + len(rows) * _CAPTION_HEIGHT
    sheet = Image.new("RGB", (columns * cell_w, sheet_h), _SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    chars = max(4, int(cell_w / max(font.getlength("x"), 1)) - 1)
    y0 = 0
    for row, height in zip(rows, heights, strict=True):
        for column, i in enumerate(row):
            x0, tile = column * cell_w, tiles[i]
            sheet.paste(tile, (x0 + (cell_w - tile.width) // 2, y0 + (height - tile.height) // 2))
            caption = pictures[i][1]
            text = caption if len(caption) <= chars else "…" + caption[-(chars - 1) :]
            draw.text(
                (x0 + cell_w / 2, y0 + height + 2), text, fill="black", font=font, anchor="ma"
            )
        y0 += height + _CAPTION_HEIGHT
    return sheet
