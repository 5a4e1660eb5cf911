"""`sapiens2 pca` and `extract --project`: the fit against numpy's own PCA of every token,
the projected rows against numpy's (x - mean) @ components.T of an unprojected run,
reconstruction, the variance-kept records, and the refusals (one line, OUT untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from extract_helpers import FAST, FP32, extract, sapiens2
from paths import DATA

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features
from sapiens2_cli.reduce.pca import fit
from sapiens2_cli.reduce.projection import Projection, load_projection

F32 = [*FP32, "--dtype", "float32"]


def one_line_error(result, *words: str) -> None:
    assert result.exit_code != 0
    message = str(result.exception)
    assert isinstance(result.exception, Sapiens2Error), result.exception
    assert "\n" not in message and all(w in message for w in words), message


@pytest.fixture
def plain(tmp_path) -> Path:
    """An unprojected float32 output of the test photos (4 rows of 12 tokens, D = 32)."""
    out = tmp_path / "plain.h5"
    assert extract(DATA, *FAST, *F32, "-o", out).exit_code == 0
    yield out


def tokens_of(out: Path, rows=slice(None)) -> np.ndarray:
    with open_features(out) as f:
        return f.read(rows).reshape(-1, f.settings["embed_dim"]).astype(np.float64)


def numpy_pca(x: np.ndarray, k: int):
    """PCA by SVD of the centred samples (not the code's covariance and eigh)."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s**2 / (len(x) - 1)
    return mean, vt[:k], variance[:k], variance.sum()


def check_fit(fitted: Projection, x: np.ndarray, k: int) -> None:
    mean, components, variance, total = numpy_pca(x, k)
    np.testing.assert_allclose(fitted.mean, mean, atol=1e-5)
    np.testing.assert_allclose(fitted.explained_variance, variance, rtol=1e-6)
    np.testing.assert_allclose(fitted.total_variance, total, rtol=1e-6)
    signs = np.sign(np.sum(fitted.components * components, axis=1))  # up to sign
    np.testing.assert_allclose(fitted.components, components * signs[:, None], atol=1e-4)
    largest = fitted.components[np.arange(k), np.abs(fitted.components).argmax(axis=1)]
    assert (largest > 0).all()  # the sign convention


def fit_output(out, k, **kw):
    with open_features(out) as rows:
        return fit(rows, k, **kw)


def test_the_fit_is_numpys_pca_of_every_token_in_any_chunking(plain, tmp_path):
    x = tokens_of(plain)
    one_chunk = fit_output(plain, 6)
    check_fit(one_chunk, x, 6)
    by_row = fit_output(plain, 6, chunk_rows=1)  # streaming: a row at a time
    np.testing.assert_allclose(by_row.components, one_chunk.components, atol=1e-5)
    np.testing.assert_allclose(by_row.explained_variance, one_chunk.explained_variance, rtol=1e-9)
    sampled = fit_output(plain, 6, rows=2)  # evenly spaced: the first and the last row
    check_fit(sampled, tokens_of(plain, [0, 3]), 6)
    assert sampled.metadata["rows"] == "2" and sampled.metadata["samples"] == "24"

    file = tmp_path / "p.safetensors"
    assert sapiens2("pca", plain, "-k", 6, "-o", file, "-q").exit_code == 0
    read = load_projection(file)
    np.testing.assert_array_equal(read.components, one_chunk.components)
    assert read.k == 6 and read.dim == 32
    np.testing.assert_allclose(
        read.variance_kept, one_chunk.explained_variance.sum() / x.var(0, ddof=1).sum()
    )
    with open_features(plain) as f:
        assert read.metadata["checkpoint_sha256"] == f'"{f.settings["checkpoint_sha256"]}"'


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-k", 33], ["-k 33", "D (32)"]),
        (["-k", 16, "--rows", 1], ["-k 16", "12"]),  # one row: 12 token samples
        (["-k", 0], ["-k 0"]),
    ],
)
def test_pca_refuses_k_beyond_d_or_the_samples(plain, tmp_path, args, words):
    out = tmp_path / "p.safetensors"
    one_line_error(sapiens2("pca", plain, *args, "-o", out), *words)
    assert not out.exists()


def test_pca_keeps_an_existing_file_without_overwrite(plain, tmp_path):
    out = tmp_path / "p.safetensors"
    out.write_text("mine")
    one_line_error(sapiens2("pca", plain, "-k", 4, "-o", out), "--overwrite")
    assert out.read_text() == "mine"


def test_projected_rows_reconstruction_and_variance_kept(plain, tmp_path):
    file = tmp_path / "proj" / "p.safetensors"
    file.parent.mkdir()
    assert sapiens2("pca", plain, "-k", 5, "--rows", 2, "-o", file, "-q").exit_code == 0
    p = load_projection(file)
    out = tmp_path / "projected.h5"
    assert extract(DATA, *FAST, *F32, "--project", file, "-o", out).exit_code == 0
    x = tokens_of(plain)
    mean, components = p.mean.astype(np.float64), p.components.astype(np.float64)
    want = (x - mean) @ components.T
    with open_features(out) as f, open_features(plain) as raw:
        assert f.row_shape == (1, 12, 5) and f.paths == raw.paths
        np.testing.assert_allclose(f.read(slice(None)).reshape(-1, 5), want, atol=1e-4)
        assert f.settings["projection_sha256"] == p.sha256
        assert (f.reductions["pca"]["k"], f.reductions["pca"]["sha256"]) == (5, p.sha256)
        assert f.settings["projection"] == "proj/p.safetensors"  # relative to OUT's folder
        fit_rows = tokens_of(plain, [0, 3])
        centred = fit_rows - fit_rows.mean(0)
        kept_fit = np.sum((centred @ components.T).var(0, ddof=1)) / centred.var(0, ddof=1).sum()
        loss = f.reductions["pca"]["loss"]
        np.testing.assert_allclose(loss["variance_kept_fit"], kept_fit, rtol=1e-5)
        kept_written = np.sum(want**2) / np.sum((x - mean) ** 2)
        np.testing.assert_allclose(f.variance_kept_written, kept_written, rtol=1e-5)
        np.testing.assert_allclose(loss["variance_kept_written"], kept_written, rtol=1e-5)
        back = f.reconstruct([1, 2])
        want_back = (raw.read([1, 2]) - mean) @ components.T @ components + mean
        np.testing.assert_allclose(back, want_back, atol=1e-4)


def test_map_layout_npy_projects_the_d_axis(plain, tmp_path):
    file = tmp_path / "p.safetensors"
    assert sapiens2("pca", plain, "-k", 4, "-o", file, "-q").exit_code == 0
    p = load_projection(file)
    out = tmp_path / "map"
    assert (
        extract(DATA, *FAST, *F32, "--layout", "map", "--project", file, "-o", out).exit_code == 0
    )
    want = (tokens_of(plain) - p.mean) @ p.components.T  # (4 * 12, 4)
    with open_features(out) as f:
        assert f.row_shape == (1, 4, 4, 3)  # (L, k, h, w)
        got = f.read(slice(None))
        np.testing.assert_allclose(got.transpose(0, 1, 3, 4, 2).reshape(-1, 4), want, atol=1e-4)
        back = f.reconstruct([0])
        assert back.shape == (1, 1, 32, 4, 3)
        np.testing.assert_allclose(
            back.transpose(0, 1, 3, 4, 2).reshape(-1, 32),
            want[:12] @ p.components + p.mean,
            atol=1e-4,
        )


def save_projection(path: Path, dim: int = 32, k: int = 3, **change) -> Path:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(dim, k)))
    fields = {
        "mean": rng.normal(size=dim).astype(np.float32),
        "components": q.T.astype(np.float32),
        "explained_variance": np.array([3.0, 2.0, 1.0][:k]),
        "total_variance": 10.0,
    }
    Projection(**{**fields, **change}).save(path)
    return path


def test_bad_projections_are_one_line_before_out_is_touched(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    cases = [
        (save_projection(tmp_path / "wide.safetensors", dim=16), ["16-wide", "32 wide"]),
        (garbage, ["not a safetensors file"]),
        (tmp_path / "absent.safetensors", ["cannot read"]),
        (
            save_projection(tmp_path / "skew.safetensors", components=np.ones((3, 32), np.float32)),
            ["not orthonormal"],
        ),
    ]
    from safetensors.numpy import save_file

    save_file(
        {"mean": np.zeros(32, np.float32)},
        tmp_path / "bare.safetensors",
        {"format": "sapiens2-pca"},
    )
    cases.append((tmp_path / "bare.safetensors", ["no 'components' tensor"]))
    out = tmp_path / "out.h5"
    for file, words in cases:
        one_line_error(extract(DATA, *FAST, "--project", file, "-o", out), *words)
        assert not out.exists()


def test_resume_and_reconstruct_need_the_same_projection(plain, tmp_path):
    first = save_projection(tmp_path / "a.safetensors")
    other = save_projection(tmp_path / "b.safetensors", mean=np.ones(32, np.float32))
    out = tmp_path / "out"
    photo = DATA / "chelsea.jpg"
    assert extract(photo, *FAST, *F32, "--project", first, "-o", out).exit_code == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    one_line_error(extract(DATA, *FAST, "--project", other, "-o", out), "--project", "resumed")
    one_line_error(extract(DATA, *FAST, "-o", out), "--project", "resumed")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before
    assert extract(DATA, *FAST, *F32, "--project", first, "-o", out).exit_code == 0  # resumes
    p, x = load_projection(first), tokens_of(plain)
    kept = np.sum(((x - p.mean) @ p.components.T.astype(np.float64)) ** 2)
    with open_features(out) as f:
        assert len(f) == 4 and "projection_energy" not in f.columns
        # the running sums continued over both runs' rows, against numpy's over all four
        assert f.variance_kept_written == pytest.approx(kept / np.sum((x - p.mean) ** 2), rel=1e-5)
        with pytest.raises(Sapiens2Error, match="not the projection"):
            f.reconstruct([0], other)
        first.write_bytes(other.read_bytes())  # the recorded file, changed since
        with pytest.raises(Sapiens2Error, match="not the projection"):
            f.reconstruct([0])


@pytest.mark.slow
def test_parts_merge_and_viz_of_projected_outputs(plain, tmp_path):
    file = tmp_path / "p.safetensors"
    assert sapiens2("pca", plain, "-k", 4, "-o", file, "-q").exit_code == 0
    out = tmp_path / "joined.h5"
    for i in range(2):
        args = (DATA, *FAST, *F32, "--project", file, "--shard", f"{i}/2", "-o", out)
        assert extract(*args).exit_code == 0
    assert sapiens2("merge", "-o", out, "-q").exit_code == 0
    want = (tokens_of(plain) - load_projection(file).mean) @ load_projection(file).components.T
    with open_features(out) as f, open_features(plain) as raw:
        order = [raw.paths.index(p) for p in f.paths]
        got = f.read(slice(None)).reshape(4, 12, 4)
        np.testing.assert_allclose(got, want.reshape(4, 12, 4)[order], atol=1e-4)
        assert f.variance_kept_written == pytest.approx(
            np.sum(want**2) / np.sum((tokens_of(plain) - load_projection(file).mean) ** 2), rel=1e-5
        )
        np.testing.assert_allclose(
            f.reconstruct([0]).shape, (1, 1, 12, 32)
        )  # via the parts' folder
    result = sapiens2("viz", out, "-o", tmp_path / "viz", "-q")
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "viz").iterdir())
    other = save_projection(tmp_path / "o.safetensors")
    part = out.parent / "joined.h5.parts" / "part-00001-of-00002.h5"
    part.unlink()
    assert (
        extract(DATA, *FAST, *F32, "--project", other, "--shard", "1/2", "-o", out).exit_code == 0
    )
    one_line_error(sapiens2("merge", "-o", out, "--overwrite"), "--project")
