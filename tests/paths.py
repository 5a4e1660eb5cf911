"""Where the tests' fixed files live: one name for each, imported by every test module."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

#: tests/, where the helper modules live (on sys.path: tests/conftest.py is the root conftest).
TESTS = Path(__file__).parent
ROOT = TESTS.parent
DOCS = ROOT / "docs"
#: Real photos (and other media) the tests read.
DATA = TESTS / "data"
#: The test photos in DATA, sorted.
PHOTOS = ("astronaut.png", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg")
#: Reference weights and input/output pairs of the tiny models (manifest.json lists them).
GOLDEN = TESTS / "golden"
#: The golden tiny weights (D=32, 18 blocks, GQA in blocks 8-9), no tokenizer.
TINY = GOLDEN / "tiny_weights.safetensors"
#: The golden tiny weights with a 2-layer 4K tokenizer.
TINY_4K = GOLDEN / "tiny_4k_weights.safetensors"


def copy_photos(folder: Path, names: Iterable[str] | Mapping[str, str] = PHOTOS) -> Path:
    """`folder` (made if need be) with copies of test photos: each of `names` under its own
    name, or for a mapping {name in folder: photo}, each photo under its name there (which
    may have folders: "a/chelsea.jpg"). The `photos` fixture (tests/conftest.py) is the
    four photos in a test's own folder; this is for other layouts and wider scopes."""
    pairs = names.items() if isinstance(names, Mapping) else ((name, name) for name in names)
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in pairs:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / photo, folder / name)
    return folder
