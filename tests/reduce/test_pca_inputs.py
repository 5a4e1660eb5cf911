"""What `pca`, `viz`, `info` and the readers are given: outputs at a URL, a hand-made h5py
file, a fit that is undefined, a -o that could not be written, a renamed projection file.
Each refusal is one line, before any work."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from extract_helpers import FAST, FP32, extract
from paths import DATA
from typer.testing import CliRunner

from sapiens2_cli.cli import app
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features
from sapiens2_cli.output.dataset import FeatureDataset
from sapiens2_cli.reduce import pca
from sapiens2_cli.reduce.pca import fit

F32 = [*FP32, "--dtype", "float32"]


def run(*args: object):
    return CliRunner().invoke(app, [*map(str, args)])


def one_line(result, *words: str) -> str:
    assert isinstance(result.exception, Sapiens2Error), result.output
    message = str(result.exception)
    assert "\n" not in message and all(w in message for w in words), message
    return message


class Rows:
    """The rows a fit reads, made up: (n, 1, tokens, D)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.settings = {"embed_dim": data.shape[-1], "layout": "tokens"}
        self.row_shape = data.shape[1:]

    def __len__(self) -> int:
        return len(self.data)

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.data[index]


@pytest.fixture
def plain(tmp_path):
    out = tmp_path / "plain.h5"
    assert extract(DATA, *FAST, *F32, "-o", out).exit_code == 0
    return out


def test_pca_keeps_every_component_when_k_is_d():
    data = np.random.default_rng(0).normal(size=(5, 1, 10, 4))
    fitted = fit(Rows(data), 4)
    assert fitted.k == 4 and fitted.variance_kept == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (np.ones((1, 1, 1, 4)), ("at least 2 token samples",)),
        (np.full((3, 1, 5, 4), 7.0), ("do not vary",)),
    ],
    ids=["one sample", "constant features"],
)
def test_pca_on_one_sample_or_constant_features_is_one_line(data, words):
    with pytest.raises(Sapiens2Error) as refused:
        fit(Rows(data), 1)
    assert all(w in str(refused.value) for w in words) and "\n" not in str(refused.value)


def test_info_json_has_no_nan(plain):
    with h5py.File(plain, "r+") as f:
        f.attrs["reductions"] = json.dumps({"int8": {"loss": {"relative_error_max": np.nan}}})
    shown = run("info", plain, "--json")
    assert shown.exit_code == 0, shown.output

    def refuse(word: str):
        raise AssertionError(f"{word} is not JSON")

    fields = json.loads(shown.stdout, parse_constant=refuse)
    assert fields["reductions"]["int8"]["loss"]["relative_error_max"] is None


@pytest.mark.parametrize("target", ["missing/proj.safetensors", "s3://bucket/proj.safetensors"])
def test_pca_output_into_a_missing_folder_or_a_url_is_one_line_before_the_fit(
    plain, tmp_path, monkeypatch, target
):
    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(pca, "fit", no_fit)
    output = target if "://" in target else tmp_path / target
    one_line(run("pca", plain, "-k", "2", "-o", output), str(output))


def test_a_plain_h5py_file_without_paths_is_one_line(tmp_path):
    path = tmp_path / "mine.h5"
    with h5py.File(path, "w") as f:
        f["features"] = np.zeros((2, 1, 12, 32), np.float16)
        f.attrs["format_version"] = 1
    with pytest.raises(Sapiens2Error, match="no paths"):
        open_features(path)
    with pytest.raises(Sapiens2Error, match="no paths"):
        FeatureDataset(path)
    for command in (
        ["info", path],
        ["viz", path, "-o", tmp_path / "viz"],
        ["pca", path, "-k", "2", "-o", tmp_path / "p.safetensors"],
    ):
        one_line(run(*command), "no paths")


def test_pca_and_viz_read_an_output_at_a_url(s3, tmp_path):
    if not s3.exists("pcaviz"):
        s3.mkdir("pcaviz")
    url = "s3://pcaviz/feats/"
    assert extract(DATA, *FAST, *F32, "-o", url).exit_code == 0
    fitted = run("pca", url, "-k", "2", "-o", tmp_path / "p.safetensors")
    assert fitted.exit_code == 0, fitted.output
    drawn = run("viz", url, "-o", tmp_path / "viz", "--images", "1")
    assert drawn.exit_code == 0, drawn.output
    assert len(list((tmp_path / "viz").glob("*.png"))) == 1


def test_reconstruct_finds_a_renamed_projection_in_a_folder(plain, tmp_path):
    projections = tmp_path / "projections"
    projections.mkdir()
    assert run("pca", plain, "-k", "4", "-o", projections / "p.safetensors").exit_code == 0
    out = tmp_path / "projected.h5"
    made = extract(DATA, *FAST, *F32, "--project", projections / "p.safetensors", "-o", out)
    assert made.exit_code == 0, made.output
    with open_features(out) as f:
        want = f.reconstruct([0])
    shutil.move(projections / "p.safetensors", projections / "renamed.safetensors")
    (projections / "other.txt").write_text("not it")
    with open_features(out) as f:
        with pytest.raises(Sapiens2Error, match="sha256") as refused:
            f.reconstruct([0])
        assert "p.safetensors" in str(refused.value)
        np.testing.assert_array_equal(f.reconstruct([0], projections), want)
