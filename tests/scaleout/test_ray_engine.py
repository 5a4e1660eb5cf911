"""`--engine ray` on a real Ray instance (127.0.0.1, 2 CPUs): every input kind, both
formats, the reductions, boxes, stdin, URLs in and out and resume give, key by key, the
rows the local engine gives, bit for bit at float32 (docs/scaling.md, "Ray")."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from extract_helpers import extract
from paths import DATA
from ray_helpers import LOCAL, RAY, assert_same_rows, by_key, local_ray, make_inputs, run

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.reduce.projection import Projection
from sapiens2_cli.scaleout.ray.tasks import tasks_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("ray") / "in")


@pytest.fixture(scope="module")
def local(inputs, tmp_path_factory) -> dict:
    """The local engine's outputs of `inputs`, per format."""
    outs = {}
    for fmt, name in (("h5", "f.h5"), ("npy", "f")):
        outs[fmt] = tmp_path_factory.mktemp(f"local-{fmt}") / name
        more = ["--rows-per-shard", "3"] if fmt == "npy" else []
        run(inputs, "-o", outs[fmt], *LOCAL, *more)
    return outs


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_every_input_kind_gives_the_local_engines_rows(cluster, inputs, local, tmp_path, fmt):
    """Catches: a task's rows lost or written twice, rows given another row's features
    (keys and features paired wrongly in a task's files), columns or failures dropped on
    the way through Ray, a video's or tar's rows split wrongly, settings that differ."""
    out = tmp_path / ("f.h5" if fmt == "h5" else "f")
    more = ["--rows-per-shard", "3"] if fmt == "npy" else []
    run(inputs, "-o", out, *RAY, "--batch-size", "2", *more)
    assert_same_rows(out, local[fmt])
    features, _, failed, _ = by_key(out)
    assert any("#t=" in key for key in features) and any(".tar/" in key for key in features)
    assert sum("table.parquet" in key for key in features) == 2
    assert "broken.jpg" in "".join(failed) and "table.parquet" in "".join(failed)
    assert not tasks_root(out).exists(), "a finished run leaves no task files"


@pytest.fixture(scope="module")
def projection(tmp_path_factory):
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 8)))
    p = Projection(
        mean=rng.normal(size=32).astype(np.float32),
        components=basis.T.astype(np.float32),
        explained_variance=np.linspace(8.0, 1.0, 8),
        total_variance=50.0,
    )
    path = tmp_path_factory.mktemp("proj") / "p.safetensors"
    p.save(path)
    return path


def test_pool_project_and_int8_in_the_actor_equal_the_local_engine(
    cluster, inputs, projection, tmp_path
):
    """Catches: a reduction left out or applied twice in the actor, int8 scales not
    carried to OUT, the recorded losses not committed with the rows."""
    flags = ["--size", "64x64", "--pool", "2", "--project", projection, "--dtype", "int8"]
    flags += ["--layout", "map"]
    run(inputs, "-o", tmp_path / "local", *LOCAL, *flags)
    run(inputs, "-o", tmp_path / "ray", *RAY, *flags)
    assert_same_rows(tmp_path / "ray", tmp_path / "local")
    record = {}
    for name in ("local", "ray"):
        record[name] = json.loads((tmp_path / name / "manifest.json").read_text())["reductions"]
    assert record["ray"].keys() == record["local"].keys() == {"pool", "pca", "int8"}
    assert record["ray"]["int8"]["loss"] == pytest.approx(record["local"]["int8"]["loss"])
    assert record["ray"]["pca"]["loss"] == pytest.approx(record["local"]["pca"]["loss"])


def test_boxes_and_paths_on_stdin_equal_the_local_engine(cluster, tmp_path):
    """Catches: a photo's boxes decoded or keyed differently on Ray; stdin not read by the
    driver (which alone lists the inputs)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "chelsea.jpg"):
        shutil.copy(DATA / name, photos / name)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x,y,w,h\nastronaut.png,10,5,85,123\nastronaut.png,60,40,20,25\n"
                     "chelsea.jpg,20,30,60,100\nmissing.jpg,1,1,5,5\n")  # fmt: skip
    run(photos, "--boxes", boxes, "-o", tmp_path / "b-local.h5", *LOCAL)
    run(photos, "--boxes", boxes, "-o", tmp_path / "b-ray.h5", *RAY)
    assert_same_rows(tmp_path / "b-ray.h5", tmp_path / "b-local.h5")
    listed = "\n".join([str(photos / "astronaut.png"), str(photos / "chelsea.jpg"), "/no/x.jpg"])
    for name, flags in (("s-local.h5", LOCAL), ("s-ray.h5", RAY)):
        result = extract("-", "-o", tmp_path / name, *flags, stdin=listed + "\n")
        assert result.exit_code == 0, result.output
    assert_same_rows(tmp_path / "s-ray.h5", tmp_path / "s-local.h5")


def test_a_resume_on_ray_reads_nothing_done_and_completes_a_local_output(
    cluster, inputs, local, tmp_path
):
    """Catches: the Ray driver redoing rows OUT holds (a row twice, or decoded again), or
    a resume that cannot continue an output of the other engine."""
    part = tmp_path / "part"
    part.mkdir()
    for name in ("astronaut.png", "chelsea.jpg", "g000.png"):
        shutil.copy(inputs / name, part / name)
    out = tmp_path / "f.h5"
    run(part, "-o", out, *LOCAL)
    result = extract(part, inputs, "-o", out, *RAY, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 3 and summary["complete"] is True
    features, _, failed, _ = by_key(out)
    want, _, want_failed, _ = by_key(local["h5"])
    assert failed == want_failed
    assert set(features) == set(want) | {
        str(part / n) for n in ("astronaut.png", "chelsea.jpg", "g000.png")
    }


def test_url_inputs_and_an_s3_output_equal_the_local_engine(s3, cluster, tmp_path):
    """Catches: URL inputs not read in the decode tasks, or the staging folder of an s3://
    OUT not uploaded commit by commit from the Ray driver."""
    from s3_server import http_server

    folder = tmp_path / "served"
    folder.mkdir()
    for name in ("astronaut.png", "coffee.jpg"):
        shutil.copy(DATA / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"no")
    if not s3.exists("rayout"):
        s3.mkdir("rayout")
    with http_server(str(folder)) as base:
        urls = [f"{base}/{n}" for n in ("astronaut.png", "coffee.jpg", "broken.jpg")]
        run(*urls, "-o", tmp_path / "local", *LOCAL)
        run(*urls, "-o", "s3://rayout/feats/", *RAY, "--rows-per-shard", "1")
    s3.get("rayout/feats/", str(tmp_path / "fetched"), recursive=True)
    assert_same_rows(tmp_path / "fetched", tmp_path / "local")


def test_device_cuda_on_a_cluster_without_gpus_is_one_line(cluster, inputs, tmp_path):
    """Catches: actors asking for GPUs that never come (a hang), or a traceback."""
    result = extract(inputs, "-o", tmp_path / "f.h5", *RAY, "--device", "cuda")
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "has no GPUs" in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "f.h5").exists()


def test_without_an_address_the_run_starts_ray_and_stops_it(tmp_path, monkeypatch):
    """A subprocess with no RAY_ADDRESS and no Ray of its own, as on a laptop. Catches: a
    run that needs a cluster, one that leaves its Ray instance running (the command would
    not exit), Ray's INFO lines or tracebacks on the run's stderr."""
    from extract_helpers import extract_subprocess

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "f.h5"
    proc = extract_subprocess(DATA / "coffee.jpg", DATA / "chelsea.jpg", "-o", out, *RAY)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "INFO" not in stderr and "Traceback" not in stderr
    features, _, _, settings = by_key(out)
    assert len(features) == 2 and settings["complete"] is True


def test_an_error_in_an_actor_is_its_one_line(cluster, tmp_path):
    """A projection whose mean is a million overflows float16 in the actor's range check.
    Catches: Ray's wrapped traceback instead of the line, or a retry loop (a hang)."""
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(32, 8)))
    huge = tmp_path / "huge.safetensors"
    Projection(
        mean=np.full(32, 1e6, np.float32),
        components=basis.T.astype(np.float32),
        explained_variance=np.linspace(8.0, 1.0, 8),
        total_variance=50.0,
    ).save(huge)
    result = extract(DATA / "coffee.jpg", "-o", tmp_path / "f", *RAY, "--project", huge)
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "float16" in str(result.exception) and "\n" not in str(result.exception)
