"""Where the tests' fixed files live: one name for each, imported by every test module."""

from __future__ import annotations

from pathlib import Path

#: tests/, where the helper modules live (on sys.path: tests/conftest.py is the root conftest).
TESTS = Path(__file__).parent
ROOT = TESTS.parent
DOCS = ROOT / "docs"
#: Real photos (and other media) the tests read.
DATA = TESTS / "data"
#: Reference weights and input/output pairs of the tiny models (manifest.json lists them).
GOLDEN = TESTS / "golden"
#: The golden tiny weights (D=32, 18 blocks, GQA in blocks 8-9), no tokenizer.
TINY = GOLDEN / "tiny_weights.safetensors"
#: The golden tiny weights with a 2-layer 4K tokenizer.
TINY_4K = GOLDEN / "tiny_4k_weights.safetensors"
