"""Running `sapiens2` in tests, one way each: in this process (fast; click's Result) or as
a real subprocess (for exit codes, stderr, signals and kills)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch
from events import Hold
from paths import TINY
from typer.testing import CliRunner

from sapiens2_cli.cli import app
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.model import load_backbone, normalize_pixels

FAST = ["--checkpoint", str(TINY), "--size", "64x48", "--workers", "0", "-q"]
#: For tests that compare features with a float32 reference: `--precision auto` is bf16 on
#: CPUs with native bf16 (AMX, AVX512-BF16) and fp32 on the others, so they must ask.
FP32 = ["--precision", "fp32"]


def sapiens2(*args: object, stdin: str | None = None, catch_exceptions: bool = True):
    """`sapiens2 ARGS` in this process; click's Result (the exception kept, not raised,
    unless `catch_exceptions` is False)."""
    return CliRunner().invoke(
        app, [*map(str, args)], input=stdin, catch_exceptions=catch_exceptions
    )


def extract(*args: object, stdin: str | None = None, check: bool = False):
    """`sapiens2 extract ARGS` in this process; with `check`, it must succeed."""
    result = sapiens2("extract", *args, stdin=stdin)
    if check:
        assert result.exit_code == 0, result.output + str(result.exception)
    return result


def summary(*args: object) -> dict:
    """The JSON summary of `sapiens2 extract ARGS --json`, which must succeed."""
    result = extract(*args, "--json", check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def refusal(*args: object) -> str:
    """The one-line error `sapiens2 extract ARGS` stops with before any work (exit 2 at the
    command line)."""
    result = extract(*args)
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "\n" not in str(result.exception)
    return str(result.exception)


def command(*args: object) -> list[str]:
    """The command line of `sapiens2 ARGS` for a subprocess."""
    return [sys.executable, "-m", "sapiens2_cli", *map(str, args)]


def sapiens2_subprocess(
    *args: object, env: dict | None = None, timeout: float = 120, **kw
) -> subprocess.CompletedProcess:
    """`sapiens2 ARGS` run to its end in a subprocess, its output captured as text."""
    return subprocess.run(
        command(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def start_subprocess(
    *args: object, env: dict | None = None, hold: Hold | None = None, **kw
) -> subprocess.Popen:
    """Start `sapiens2 ARGS` in a subprocess (stdout and stderr text pipes unless given).

    With a `hold`, the command runs as the command line does but stops for good at the
    hold's row (tests/held_run.py), so a kill or Ctrl-C lands there, never after the end.
    """
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kw}
    if hold is not None:
        hold.marker.unlink(missing_ok=True)  # an earlier run's
    argv = command(*args) if hold is None else hold.command(*args)
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, **options)


def extract_subprocess(*args: object, **kw) -> subprocess.Popen:
    """Start `sapiens2 extract ARGS` in a subprocess (see start_subprocess)."""
    return start_subprocess("extract", *args, **kw)


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
