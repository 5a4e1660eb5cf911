"""`sapiens2 extract` end to end on the tiny weights: exactness, alignment, failures, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from docs_examples import examples, run_example
from extract_helpers import (
    FAST,
    FP32,
    extract,
    extract_subprocess,
    reference_features,
)
from hostile_corpus import make_corpus
from paths import DATA, GOLDEN, TINY, copy_photos
from PIL import Image

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.output import open_features


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "in"
    return root, *make_corpus(root)


def test_an_image_at_the_target_size_matches_the_model_run_directly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    out = tmp_path / "f.h5"
    args = ["--layers", "0,-1", "--tokens", "all", "--dtype", "float32", *FP32]
    result = extract(tmp_path / "exact.png", "-o", out, *FAST, *args)
    assert result.exit_code == 0, result.output
    with open_features(out) as f:
        got = f.read([0])[0]  # (2, 9 + 12, 32)
    want = reference_features(str(tmp_path / "exact.png"), layers=(0, 17))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_corpus_rows_align_with_paths_and_failures_are_recorded(corpus, tmp_path, fmt):
    root, good, bad = corpus
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    result = extract(
        root, "-o", out, *FAST, *FP32, "--workers", "2", "--batch-size", "3", "--json",
        "--rows-per-shard" if fmt == "npy" else "--compression",
        "4" if fmt == "npy" else "gzip",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds only the JSON object
    assert summary["images"] == len(good) and summary["failed"] == len(bad)
    assert summary["complete"] is True and summary["output"] == str(out)
    with open_features(out) as f:
        assert sorted(f.paths) == sorted(good)  # each good image once, no bad one
        assert dict(f.failed).keys() == bad.keys()
        for path, reason in f.failed:
            assert bad[path] in reason and "\n" not in reason
        assert f.settings["complete"] is True and f.settings["tokens"] == "patch"
        features = f.read(slice(None))
        assert features.shape == (len(good), 1, 12, 32) and features.dtype == np.float16
        for row, path in enumerate(f.paths):
            assert tuple(f.original_size[row]) == good[path]
            want = reference_features(path)[:, 9:].astype(np.float16)
            np.testing.assert_allclose(features[row], want, atol=2e-3, rtol=1e-3)


def test_paths_from_stdin_and_lists(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"{DATA / 'coffee.jpg'}\n{tmp_path / 'gone.jpg'}\n")
    out = tmp_path / "f"
    stdin = f"{DATA / 'chelsea.jpg'}\n"
    result = extract("-", "--files-from", listed, "-o", out, *FAST, stdin=stdin)
    assert result.exit_code == 0, result.output
    with open_features(out) as f:
        assert f.paths == [str(DATA / "chelsea.jpg"), str(DATA / "coffee.jpg")]
        assert f.failed == [(str(tmp_path / "gone.jpg"), "file not found")]


def test_token_modes_layouts_and_layers_agree(tmp_path):
    image = DATA / "astronaut.png"
    runs = {
        "all": ["--tokens", "all", "--dtype", "float32"],
        "map": ["--layout", "map", "--dtype", "float32"],
        "cls": ["--tokens", "cls", "--dtype", "float32"],
        "mean": ["--tokens", "mean", "--dtype", "float32"],
    }
    got = {}
    for name, args in runs.items():
        out = tmp_path / f"{name}.h5"
        result = extract(image, "-o", out, *FAST, "--layers", "3,-1", *args)
        assert result.exit_code == 0, result.output
        with open_features(out) as f:
            got[name] = f.read([0])[0]
            assert f.settings["layers"] == [3, 17]
    assert got["all"].shape == (2, 21, 32) and got["map"].shape == (2, 32, 4, 3)
    patches = got["all"][:, 9:]  # (2, 12, 32)
    np.testing.assert_array_equal(got["map"], patches.reshape(2, 4, 3, 32).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got["cls"], got["all"][:, 0])
    np.testing.assert_allclose(got["mean"], patches.mean(axis=1), atol=1e-6)


def test_letterbox_records_content_boxes(tmp_path):
    out = tmp_path / "f.h5"
    args = [DATA / "coffee.jpg", DATA / "astronaut.png", "-o", out, *FAST, "--resize", "letterbox"]
    assert extract(*args).exit_code == 0
    with open_features(out) as f:
        assert f.content_box.tolist() == [[16, 0, 32, 48], [8, 0, 48, 48]]
        assert f.settings["resize"] == "letterbox"


def test_the_4k_tokenizer_checkpoint(tmp_path):
    out = tmp_path / "f.h5"
    ckpt = GOLDEN / "tiny_4k_weights.safetensors"
    result = extract(DATA / "coffee.jpg", "-o", out, "--checkpoint", ckpt, "--size", "128x64", "-q")
    assert result.exit_code == 0, result.output
    with open_features(out) as f:
        assert f.read([0]).shape == (1, 1, 2, 32) and f.settings["grid_size"] == [2, 1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "65x48"], "multiple of 16"),
        (["--size", "big"], "not HxW"),
        (["--layers", "99"], "out of range"),
        (["--layers", "a,b"], "block indices"),
        (["--tokens", "cls", "--layout", "map"], "--layout map needs --tokens patch"),
        (["--dtype", "int4"], "unknown --dtype"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--compression", "gzip", "--format", "npy"], "HDF5 output only"),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_flags_stop_before_any_work(tmp_path, flags, message):
    out = tmp_path / "f.h5"
    args = [DATA / "coffee.jpg", "-o", out, "--checkpoint", TINY, *flags]
    result = extract(*args)
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert message in str(result.exception)
    assert not out.exists()


def test_bad_inputs_and_outputs_stop_before_any_work(tmp_path):
    (tmp_path / "empty").mkdir()
    result = extract(tmp_path / "empty", "-o", tmp_path / "f.h5", *FAST)
    assert "no input files found" in str(result.exception)
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "f.h5", "--arch", "2b")
    assert "unknown arch" in str(result.exception)
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "f.h5", "--arch", "0.1b")
    assert "sapiens2 download" in str(result.exception)  # offline, not cached: resolved
    assert not (tmp_path / "f.h5").exists()  # through the hub cache, before any work
    (tmp_path / "taken.h5").write_text("someone's notes")
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "taken.h5", *FAST)
    assert "--overwrite" in str(result.exception)
    assert (tmp_path / "taken.h5").read_text() == "someone's notes"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = extract(DATA / "coffee.jpg", "-o", locked / "f.h5", *FAST)
        assert "not writable" in str(result.exception)
    (tmp_path / "plain").write_text("a file, not a folder")
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "plain" / "f.h5", *FAST)
    assert "is a file, not a folder" in str(result.exception)  # was a FileExistsError
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "s.h5", *FAST, "--shard", "")
    assert "is not I/N" in str(result.exception)  # was an AttributeError
    if Path("/proc/self").exists():  # no one, root included, creates files in /proc
        result = extract(DATA / "coffee.jpg", "-o", "/proc/f.h5", *FAST)
        assert "not writable" in str(result.exception)


def test_the_command_line_prints_one_line_and_no_traceback(tmp_path):
    proc = extract_subprocess(DATA, "-o", tmp_path / "f.h5", "--checkpoint", TINY, "--size", "1x1")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "Traceback" not in stderr


def test_the_format_docs_reading_example_runs(tmp_path, monkeypatch):
    for out in ("features.h5", "features"):
        result = extract(DATA, "-o", tmp_path / out, *FAST)
        assert result.exit_code == 0, result.output
    blocks = examples("format.md", "python")
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        run_example(code, "format.md")


def test_nothing_is_touched_before_every_check_passed(tmp_path):
    """Catches: --overwrite emptying a good output before a check that needs the weights
    (layers) or the device (fp16 on a CPU, which autocast cannot run) fails."""
    out = tmp_path / "f.h5"
    assert extract(DATA / "coffee.jpg", "-o", out, *FAST).exit_code == 0
    before = out.read_bytes()
    for flags in (["--layers", "99"], ["--precision", "fp16", "--device", "cpu"]):
        result = extract(DATA / "coffee.jpg", "-o", out, *FAST, "--overwrite", *flags)
        assert isinstance(result.exception, Sapiens2Error), (flags, result.output)
        assert out.read_bytes() == before, flags


def test_strict_exits_3_when_an_input_failed(tmp_path):
    """Catches: --strict ignored (scripts never notice failures) or ending the run early."""
    src = copy_photos(tmp_path / "in", {"a.jpg": "coffee.jpg"})
    (src / "b.jpg").write_text("not a picture")
    result = extract(src, "-o", tmp_path / "f.h5", *FAST, "--strict")
    assert result.exit_code == 3
    with open_features(tmp_path / "f.h5") as f:
        assert len(f) == 1 and len(f.failed) == 1 and f.settings["complete"] is True


def test_jpeg_draft_reaches_the_decoder_and_is_recorded(tmp_path):
    """Catches: --jpeg-draft parsed but not passed to the decoder, or not recorded, so a
    resume could mix reduced and full decodes in one output."""
    out = tmp_path / "f.h5"
    image = DATA / "hubble_deep_field.jpg"  # 480x419: decodes at 1/2 for a 64x48 input
    flags = ["--jpeg-draft", "--dtype", "float32", *FP32]
    assert extract(image, "-o", out, *FAST, *flags).exit_code == 0
    draft = decode_image(str(image), (64, 48), draft=True).pixels
    assert not np.array_equal(draft, decode_image(str(image), (64, 48)).pixels)
    with open_features(out) as f:
        assert f.settings["jpeg_draft"] is True
        got = f.read([0])[0]
    Image.fromarray(draft).save(tmp_path / "draft.png")  # the same pixels, full decode
    np.testing.assert_allclose(
        got, reference_features(str(tmp_path / "draft.png"))[:, 9:], atol=1e-5
    )
    result = extract(image, "-o", out, *FAST, "--no-jpeg-draft")
    assert "--jpeg-draft" in str(result.exception)


def test_a_flag_conflict_is_reported_before_the_hub_is_asked(tmp_path):
    """Catches: `--arch 0.1b --layout map --tokens cls` reporting a Hub problem (offline
    here; online it would download and hash gigabytes first) instead of the conflict."""
    out = tmp_path / "x.h5"
    result = extract(DATA, "--arch", "0.1b", "--layout", "map", "--tokens", "cls", "-o", out)
    assert "--layout map needs --tokens patch" in str(result.exception)
    result = extract(DATA, "--arch", "0.1b", "--tokens", "mean", "-o", out, "--dtype", "int4")
    assert "unknown --dtype" in str(result.exception)
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_a_file_name_that_is_not_utf8_gets_its_row_and_reads_back(tmp_path, fmt):
    """Catches: such a name failing the whole HDF5 batch (with advice about a full disk)
    and losing the valid images beside it, or coming back as other bytes."""
    name = os.fsdecode(b"caf\xe9.jpg")
    src = copy_photos(tmp_path / "in", {name: "coffee.jpg", "plain.jpg": "chelsea.jpg"})
    odd = src / name
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    assert extract(src, "-o", out, *FAST).exit_code == 0
    with open_features(out) as f:
        assert sorted(f.paths) == sorted([str(odd), str(src / "plain.jpg")])
        assert not f.failed
    if fmt == "h5":  # plain h5py, as docs/format.md says to read them
        with h5py.File(out) as f:
            names = list(f["paths"].asstr(errors="surrogateescape")[:])
        assert os.fsencode(str(odd)) in [os.fsencode(n) for n in names]
    summary = json.loads(extract(src, "-o", out, *FAST, "--json").stdout)
    assert summary["skipped"] == 2 and summary["images"] == 0  # resumes by the same key


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compile-mode", "x"], "unknown --compile-mode 'x'"),
        (["--compile-mode", "max-autotune"], "--compile-mode max-autotune applies with --compile"),
        (["--layers", "1,,2"], "--layers '1,,2' is not a list of block indices"),
        (["--layers", "1,"], "--layers '1,' is not a list of block indices"),
        (["--size", "99999999999999999999x16"], "each side is at most 16384"),
    ],
)
def test_flags_once_accepted_silently_are_refused(tmp_path, flags, message):
    """Catches: --compile-mode ignored without --compile, an empty block index dropped, and
    a size of 10^20 answered with 'choose e.g. 100000000000000000000x16'."""
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "f.h5", "--checkpoint", TINY, *flags)
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert message in str(result.exception)
    assert list(tmp_path.iterdir()) == []
