"""Running `sapiens2 extract` in tests: in-process (fast) or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from paths import TINY
from typer.testing import CliRunner

from sapiens2_cli.cli import app
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.model import load_backbone, normalize_pixels

FAST = ["--checkpoint", str(TINY), "--size", "64x48", "--workers", "0", "-q"]
#: For tests that compare features with a float32 reference: `--precision auto` is bf16 on
#: CPUs with native bf16 (AMX, AVX512-BF16) and fp32 on the others, so they must ask.
FP32 = ["--precision", "fp32"]


def extract(*args: str, stdin: str | None = None):
    """Run the command in this process; returns click's Result (exception kept, not raised)."""
    return CliRunner().invoke(app, ["extract", *map(str, args)], input=stdin)


def extract_subprocess(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start the real command line (for exit codes, signals and kills)."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kw}
    command = [sys.executable, "-m", "sapiens2_cli", "extract", *map(str, args)]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, **options)


_MODEL: dict = {}


def reference_features(path: str, layers=(17,), size=(64, 48), resize="stretch") -> np.ndarray:
    """Features of one image computed directly: decode, normalize, model in float32."""
    if "tiny" not in _MODEL:
        _MODEL["tiny"] = load_backbone(TINY)
    pixels = torch.from_numpy(decode_image(path, size, resize).pixels).permute(2, 0, 1)[None]
    pixels = pixels.contiguous()  # NCHW in memory, as upstream's transforms give it
    with torch.inference_mode():
        out = _MODEL["tiny"].forward_layers(normalize_pixels(pixels), list(layers))
    return torch.stack(out, dim=1)[0].numpy()  # (n_layers, 9 + h*w, D)
