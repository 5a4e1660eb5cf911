"""scripts/compare_outputs.py's comparison (scripts/output_diff.py): it must see every kind
of change a refactor could make to an output, on small HDF5 files and npy folders written
here."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import ROOT

SCRIPTS = ROOT / "scripts"
SCRIPT = SCRIPTS / "output_diff.py"


def load_script():
    spec = importlib.util.spec_from_file_location("output_diff", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


compare_outputs = load_script()
FEATURES = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 7


def write_h5(path: Path, dtype=np.float16, flip: bool = False, **attrs) -> Path:
    features = FEATURES.astype(dtype)
    if flip:
        features.view(np.uint8).reshape(-1)[5] ^= 1
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=features, chunks=(1, 3, 4))
        paths = f.create_dataset("paths", data=np.array([b"/a.jpg", b"/b.jpg"], "S256"))
        paths.attrs["note"] = "keys"
        f.attrs.update({"arch": "custom", "layers": np.array([17]), "complete": True, **attrs})
    return path


def write_npy(folder: Path, **settings) -> Path:
    folder.mkdir()
    np.save(folder / "shard-00000.features.npy", FEATURES.astype(np.float16))
    np.save(folder / "shard-00000.paths.npy", np.array(["/a.jpg", "/b.jpg"]))
    manifest = {"format": "sapiens2-features-npy", "settings": {"arch": "custom", **settings}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def differences(a: Path, b: Path) -> list[str]:
    return compare_outputs.compare_paths(a, b).differences


def test_the_script_does_not_import_the_package():
    # The package's modules move in the refactors it checks; only the command line is fixed.
    for name in ("compare_outputs", "compare_commands", "compare_inputs", "output_diff"):
        text = (SCRIPTS / f"{name}.py").read_text()
        assert not re.search(r"^\s*(from|import)\s+sapiens2_cli", text, re.M), name


def test_identical_outputs_are_the_same(tmp_path):
    assert differences(write_h5(tmp_path / "a.h5"), write_h5(tmp_path / "b.h5")) == []
    assert differences(write_npy(tmp_path / "a"), write_npy(tmp_path / "b")) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"flip": True},
            "dataset /features: 1 of 24 elements differ, first at (0, 0, 2):"
            " 0.28564453125 vs 0.34814453125",
        ),
        ({"arch": "0.4b"}, "attribute /@arch 'custom' vs '0.4b'"),
        ({"layers": np.array([16])}, "attribute /@layers [17] vs [16]"),
        ({"layers": np.array([17], np.int32)}, "attribute /@layers type int64 vs int32"),
        ({"extra": 1}, "attribute /@extra only in after"),
        ({"dtype": np.float32}, "dataset /features dtype float16 vs float32"),
    ],
)
def test_each_change_to_an_hdf5_file_is_found(tmp_path, change, expected):
    before = write_h5(tmp_path / "a.h5")
    after = write_h5(tmp_path / "b.h5", **change)
    assert [f"a.h5: {expected}"] == differences(before, after)


def test_an_attribute_missing_on_a_dataset_is_found(tmp_path):
    before, after = write_h5(tmp_path / "a.h5"), write_h5(tmp_path / "b.h5")
    with h5py.File(after, "a") as f:
        del f["paths"].attrs["note"]
    assert differences(before, after) == ["a.h5: attribute /paths@note only in before"]


def test_a_dataset_missing_or_chunked_otherwise_is_found(tmp_path):
    before, after = write_h5(tmp_path / "a.h5"), write_h5(tmp_path / "b.h5")
    with h5py.File(after, "a") as f:
        del f["paths"]
        data = f["features"][()]
        del f["features"]
        f.create_dataset("features", data=data, chunks=(2, 3, 4))
    assert differences(before, after) == [
        "a.h5: dataset /features chunks (1, 3, 4) vs (2, 3, 4)",
        "a.h5: /paths only in before",
    ]


def test_an_extra_file_in_an_npy_folder_is_found(tmp_path):
    before, after = write_npy(tmp_path / "a"), write_npy(tmp_path / "b")
    (after / "shard-00001.paths.npy").write_bytes(b"")
    assert differences(before, after) == ["a/shard-00001.paths.npy: only in after"]


def test_a_changed_shard_is_found_by_its_bytes(tmp_path):
    before, after = write_npy(tmp_path / "a"), write_npy(tmp_path / "b")
    np.save(after / "shard-00000.paths.npy", np.array(["/a.jpg", "/c.jpg"]))
    (found,) = differences(before, after)
    assert found.startswith("a/shard-00000.paths.npy: bytes differ from offset")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"arch": "1b"}, "settings.arch: 'custom' vs '1b'"),
        ({"pool": 1}, "settings: key 'pool' only in after"),
    ],
)
def test_a_manifest_change_is_found_as_json(tmp_path, settings, expected):
    before, after = write_npy(tmp_path / "a"), write_npy(tmp_path / "b", **settings)
    assert differences(before, after) == [f"a/manifest.json: {expected}"]


def test_a_manifest_is_compared_parsed_not_as_text(tmp_path):
    before, after = write_npy(tmp_path / "a"), write_npy(tmp_path / "b")
    manifest = json.loads((after / "manifest.json").read_text())
    (after / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert differences(before, after) == []


def test_stdout_skips_only_the_timing_keys():
    before = json.dumps({"images": 4, "seconds": 1.5, "images_per_s": 2.6})
    same = json.dumps({"images": 4, "seconds": 9.0, "images_per_s": 0.4})
    other = json.dumps({"images": 5, "seconds": 1.5, "images_per_s": 2.6})
    result = compare_outputs.compare_stdout(before, same, "out")
    assert result.same and result.ignored == {"out: seconds", "out: images_per_s"}
    assert compare_outputs.compare_stdout(before, other, "out").differences == [
        "out: images: 4 vs 5"
    ]
    assert not compare_outputs.compare_stdout("a\n", "b\n", "out").same


def test_safetensors_header_order_is_not_a_difference_but_tensor_bytes_are(tmp_path):
    def write(path: Path, header: dict, data: bytes) -> Path:
        text = json.dumps(header).encode()
        path.write_bytes(len(text).to_bytes(8, "little") + text + data)
        return path

    tensor = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    header = {"__metadata__": {"k": "4", "format": "sapiens2-pca"}, "mean": tensor}
    reordered = {"mean": tensor, "__metadata__": {"format": "sapiens2-pca", "k": "4"}}
    a = write(tmp_path / "a.safetensors", header, b"\0\0\x80?")
    assert differences(a, write(tmp_path / "b.safetensors", reordered, b"\0\0\x80?")) == []
    (found,) = differences(a, write(tmp_path / "c.safetensors", reordered, b"\0\0\x80@"))
    assert found.startswith("a.safetensors: tensor bytes differ from offset 3")
