"""Where the tests' fixed files live: one name for each, imported by every test module."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
#: Real photos (and other media) the tests read.
DATA = Path(__file__).parent / "data"
#: Reference weights and input/output pairs of the tiny models (manifest.json lists them).
GOLDEN = Path(__file__).parent / "golden"
#: The golden tiny weights (D=32, 18 blocks, GQA in blocks 8-9), no tokenizer.
TINY = GOLDEN / "tiny_weights.safetensors"
#: The golden tiny weights with a 2-layer 4K tokenizer.
TINY_4K = GOLDEN / "tiny_4k_weights.safetensors"
