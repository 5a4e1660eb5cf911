"""Pixel normalization: uint8 RGB -> the float input the backbone expects."""

from __future__ import annotations

import torch

from sapiens2_cli.model.config import PIXEL_MEAN, PIXEL_STD


def normalize_pixels(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 3, H, W) RGB on the 0-255 scale (uint8 or float) -> (x - mean) / std in `dtype`.

    Run it on the device the model is on, so only uint8 crosses the host-device link.
    """
    # Made on the host and sent without blocking: `torch.tensor(..., device=cuda)` is a
    # blocking copy, which waits for all the work queued on the stream, once per batch.
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1).to(images.device, non_blocking=True)
    return ((images.to(torch.float32) - mean) / std).to(dtype)
