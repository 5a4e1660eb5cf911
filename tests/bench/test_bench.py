"""`sapiens2 bench` and `sapiens2 archs` on CPU with tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from extract_helpers import sapiens2
from PIL import Image

from sapiens2_cli import Sapiens2Config, Sapiens2Error, build_backbone
from sapiens2_cli.bench import count_cost, peak_tflops, time_forward
from sapiens2_cli.bench.pipeline import time_pipeline
from sapiens2_cli.config.choices import Precision
from sapiens2_cli.model import get_config

TIMING_KEYS = {
    "batch_size",
    "warmup",
    "steps",
    "median_ms",
    "p90_ms",
    "images_per_s",
    "peak_memory_bytes",
    "peak_memory_source",
    "compile_s",
    "achieved_tflops",
}
ENVIRONMENT_KEYS = {"torch", "device", "device_name", "precision", "batch_size", "image_size"}


def _bench(*args: str) -> dict:
    result = sapiens2("bench", *args, "--json", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow  # builds 0.1b's random weights on the CPU
def test_bench_json_has_every_figure_and_the_environment():
    report = _bench(
        "--arch",
        "0.1b",
        "--size",
        "32x48",
        "--batch-size",
        "2",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--precision",
        "fp32",  # auto is bf16 on CPUs with native bf16
    )
    assert report.keys() >= TIMING_KEYS
    assert report["environment"].keys() >= ENVIRONMENT_KEYS
    env = report["environment"]
    assert (env["precision"], env["batch_size"], env["image_size"]) == ("fp32", 2, [32, 48])
    assert env["torch"] == torch.__version__
    assert report["parameters"] == 113_993_472
    assert report["flops_per_image"] == count_cost(get_config("0.1b"), 32, 48).flops_per_image
    assert "attention included" in report["flops_convention"]
    assert_throughput_matches_the_steps(report)
    assert report["peak_memory_bytes"] > 0
    assert "mfu" not in report  # no known peak for a CPU


def test_count_only_runs_nothing():
    report = _bench("--arch", "5b", "--count-only")
    assert report["parameters"] == 5_066_902_976
    assert report["image_size"] == [1024, 768]
    assert not TIMING_KEYS & report.keys()
    assert report["environment"]["batch_size"] is None


def test_human_output_states_the_flop_convention():
    result = sapiens2("bench", "--arch", "0.4b", "--size", "512x384", "--count-only")
    assert result.exit_code == 0
    assert "2 FLOPs per multiply-add, attention included" in result.stdout
    assert "395,450,368" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "many"], "neither a positive number nor auto"),
        (["--size", "100x100"], "not a positive multiple of 16"),
        (["--precision", "fp8"], "unknown --precision"),
    ],
)
def test_bad_flags_are_fix_it_errors(args, message):
    result = sapiens2("bench", "--arch", "0.1b", "--size", "32x32", *args)
    assert isinstance(result.exception, Sapiens2Error)
    assert message in str(result.exception)


TINY_CONFIG = Sapiens2Config(embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64)


def test_auto_batch_size_is_one_on_cpu():
    """Catches: a CPU run probing batch sizes (a CPU out of memory kills, it does not raise)."""
    from sapiens2_cli.config.options import ExtractOptions
    from sapiens2_cli.engine.forward import DeviceModel

    options = ExtractOptions(precision="fp32", batch_size=8)
    stage = DeviceModel(build_backbone(TINY_CONFIG), options, torch.device("cpu"), (2, 2))
    assert stage.fit_batch((32, 32)) == 1 and stage.batch_size == 1


def test_time_forward_counts_its_steps():
    model = build_backbone(TINY_CONFIG)
    timing = time_forward(model, 3, (32, 32), torch.device("cpu"), torch.float32, steps=4, warmup=0)
    assert (timing.batch_size, timing.steps, timing.compile_s) == (3, 4, None)
    assert_throughput_matches_the_steps(timing.as_dict())


def assert_throughput_matches_the_steps(timing: dict) -> None:
    """images/s against the per-batch step times, whatever the machine's speed: the slowest
    step (p90 is it for up to 5 steps) bounds it below, the half of the steps at or above
    the median bounds it above. Catches a rate per batch, or in ms, or of the wrong steps."""
    batch, steps, median, p90 = (timing[k] for k in ("batch_size", "steps", "median_ms", "p90_ms"))
    assert steps <= 5 and p90 >= median > 0
    slowest_total_s = steps * p90 / 1000
    least_total_s = -(-steps // 2) * median / 1000
    rate = timing["images_per_s"]
    assert batch * steps / slowest_total_s * (1 - 1e-9) <= rate
    assert rate <= batch * steps / least_total_s * (1 + 1e-9)


def test_time_forward_reports_the_steps_it_timed(monkeypatch):
    """With step times known (0.1, 0.2, 0.3, 0.4 s), every figure is exact."""
    from sapiens2_cli.bench import timing

    times = iter([0.1, 0.2, 0.3, 0.4])
    monkeypatch.setattr(timing, "_timed", lambda step, device: (step(), next(times))[1])
    result = time_forward(
        build_backbone(TINY_CONFIG), 3, (32, 32), torch.device("cpu"), torch.float32, 4, 0
    )
    assert (result.median_ms, result.p90_ms) == pytest.approx((250.0, 400.0))
    assert result.images_per_s == pytest.approx(3 * 4 / 1.0)


@pytest.mark.slow  # inductor compiles C++ on the CPU
def test_compile_time_is_reported_apart():
    model = build_backbone(TINY_CONFIG)
    timing = time_forward(
        model, 1, (32, 32), torch.device("cpu"), torch.float32, steps=2, warmup=1, compile=True
    )
    assert timing.compile_s is not None and timing.compile_s > 0


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", Precision.BF16, 989.4),
        ("NVIDIA H100 PCIe", Precision.FP16, 756.5),
        ("NVIDIA H200", Precision.BF16, 989.4),
        ("NVIDIA A100-SXM4-80GB", Precision.FP32, 19.5),
        ("NVIDIA L40S", Precision.BF16, 362.05),
        ("NVIDIA L4", Precision.BF16, 121.0),
        ("NVIDIA A10", Precision.BF16, 125.0),
        ("NVIDIA A10G", Precision.BF16, None),
        ("NVIDIA GeForce RTX 4090", Precision.BF16, 165.2),
        ("Tesla T4", Precision.BF16, None),
        ("AMD EPYC", Precision.FP32, None),
    ],
)
def test_peak_table(name, precision, peak):
    assert peak_tflops(name, precision) == peak


def test_archs_json_lists_the_zoo():
    result = sapiens2("archs", "--json", catch_exceptions=False)
    rows = {r["arch"]: r for r in json.loads(result.stdout)}
    assert list(rows) == ["0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"]
    assert rows["1b"]["parameters"] == 1_455_474_176
    assert rows["1b"]["flops_per_image"] == pytest.approx(11.296e12, rel=0.01)
    assert rows["1b-4k"]["image_size"] == [4096, 3072]
    assert rows["5b"]["hub_repo"] == "facebook/sapiens2-pretrain-5b"
    assert {"embed_dim", "layers", "heads", "cached"} <= rows["0.8b"].keys()


def _jpegs(folder, count: int) -> None:
    """A folder of small JPEGs."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg")


def test_pipeline_runs_the_real_extract_loop(tmp_path):
    _jpegs(tmp_path / "images", 5)
    run = time_pipeline(
        tmp_path / "images", TINY_CONFIG, (32, 32), torch.device("cpu"), torch.float32, 2, workers=0
    )
    assert (run.images, run.failed, run.workers) == (5, 0, 0)
    assert run.seconds > 0 and run.images_per_s == pytest.approx(5 / run.seconds)
    assert run.load_s > 0 and run.compile_s is None
    steady_s = run.seconds - run.load_s  # the load, timed apart, taken out of the whole run
    assert run.steady_images_per_s == (pytest.approx(5 / steady_s) if steady_s > 0 else 0.0)


@pytest.mark.slow  # saves a random 0.1b checkpoint (456 MB) for the pipeline to load
def test_bench_pipeline_reports_the_ratio(tmp_path):
    _jpegs(tmp_path / "images", 4)
    report = _bench(
        "--arch",
        "0.1b",
        "--size",
        "32x32",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--pipeline",
        str(tmp_path / "images"),
        "--workers",
        "0",
    )
    pipeline = report["pipeline"]
    assert pipeline["images"] == 4
    assert pipeline["ratio"] == pytest.approx(pipeline["images_per_s"] / report["images_per_s"])
    assert report["environment"]["weights_dtype"] == "fp32"
