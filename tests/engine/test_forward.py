"""The device stage of extract (engine/forward.py) and the stage profile, on the tiny
weights: exactness against the model run directly, bf16 weights within tolerance, the
range check, torch.compile without recompiles, fused GQA attention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from extract_helpers import FAST, extract
from paths import DATA, TINY

from sapiens2_cli.config.choices import Precision, StorageDtype
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.engine.forward import DeviceModel
from sapiens2_cli.engine.profile import STAGES
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.model import ARCHS, get_config, load_backbone, normalize_pixels
from sapiens2_cli.output import open_features
from sapiens2_cli.reduce.cast import check_range, to_storage
from sapiens2_cli.scaleout.launch import extract as library_extract

SIZE = (64, 48)
GRID = (4, 3)
PHOTOS = sorted(str(p) for p in DATA.iterdir() if p.suffix in {".jpg", ".png"})
#: The tolerance held for bf16 weights against float32 ones: per-image cosine similarity
#: of the kept features (docs/performance.md, "bf16 weights").
BF16_MIN_COSINE = 0.999


def _photos(size=SIZE) -> torch.Tensor:
    """The test photos decoded as extract decodes them, (B, H, W, 3) uint8."""
    return torch.stack([torch.from_numpy(decode_image(p, size).pixels.copy()) for p in PHOTOS])


def _device_model(
    model, batch_size: int, device="cpu", precision=torch.float32, grid=GRID, **kw
) -> DeviceModel:
    if "compile" in kw:  # a mode, as --compile-mode gives it
        kw |= {"compile": True, "compile_mode": kw["compile"]}
    options = ExtractOptions(
        **{"layers": (8, 17), "dtype": StorageDtype.FLOAT32} | kw,
        precision=Precision.of(precision),
        batch_size=batch_size,
    )
    return DeviceModel(model, options, torch.device(device), grid)


def _reference(pixels: torch.Tensor, layers=(8, 17)) -> np.ndarray:
    """The model run directly in float32 on contiguous NCHW input, as upstream's transforms
    give it (a channels-last view takes another convolution kernel): (B, n_layers, h*w, D)."""
    model = load_backbone(TINY)
    x = normalize_pixels(pixels.permute(0, 3, 1, 2).contiguous())
    with torch.inference_mode():
        outputs = model.forward_layers(x, layers)
    return torch.stack(outputs, dim=1)[:, :, 9:].numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """Per-image cosine similarity of two (B, ...) feature arrays."""
    a, b = torch.from_numpy(a).float().flatten(1), torch.from_numpy(b).float().flatten(1)
    return F.cosine_similarity(a, b, dim=1)


def test_features_equal_the_model_run_directly_with_a_short_last_chunk():
    pixels = _photos()
    device = _device_model(load_backbone(TINY), batch_size=3)
    got = np.concatenate([device.submit(pixels[:3]).result(), device.submit(pixels[3:]).result()])
    np.testing.assert_allclose(got, _reference(pixels), rtol=0, atol=1e-5)


def test_bf16_weights_stay_within_the_cosine_tolerance_on_photos():
    pixels = _photos((128, 96))
    reference = _device_model(load_backbone(TINY), 4, grid=(8, 6))
    bf16 = _device_model(
        load_backbone(TINY, dtype=torch.bfloat16), 4, precision=torch.bfloat16, grid=(8, 6)
    )
    want, got = reference.submit(pixels).result(), bf16.submit(pixels).result()
    cosine = _cosines(got, want)
    assert cosine.min() >= BF16_MIN_COSINE, cosine


def test_float16_overflow_and_nan_are_errors_naming_the_fix():
    stored, peak, *_ = to_storage(torch.tensor([[1.0, 7e4]]), StorageDtype.FLOAT16)
    assert stored.dtype == torch.float16
    assert peak.item() == 7e4
    with pytest.raises(Sapiens2Error, match="--dtype float32"):
        check_range(peak.item(), StorageDtype.FLOAT16)
    check_range(peak.item(), StorageDtype.FLOAT32)
    for bad in (float("nan"), float("inf")):
        _, peak, *_ = to_storage(torch.tensor([1.0, bad]), StorageDtype.FLOAT32)
        with pytest.raises(Sapiens2Error, match="--precision"):
            check_range(peak.item(), StorageDtype.FLOAT32)


def test_float16_overflow_stops_the_run_before_the_batch_is_written(tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(TINY)
    state["ln1.weight"] = state["ln1.weight"] * 1e6  # the final norm: last-layer features huge
    loud = tmp_path / "loud.safetensors"
    save_file(state, str(loud))
    out = tmp_path / "f.h5"
    result = extract(DATA, "-o", out, "--checkpoint", loud, *FAST[2:], "--batch-size", "2")
    assert isinstance(result.exception, Sapiens2Error), result.output
    assert "--dtype float32" in str(result.exception)
    with open_features(out) as f:
        assert len(f.paths) == 0


def test_map_layout_comes_back_contiguous():
    device = _device_model(load_backbone(TINY), 4, layout="map")
    got = device.submit(_photos()).result()
    assert got.shape == (4, 2, 32, 4, 3) and got.flags.c_contiguous


def test_grouped_query_attention_runs_a_fused_kernel_without_repeating_heads():
    block = load_backbone(TINY).blocks[8]
    assert block.attn.num_kv_heads < block.attn.num_heads
    x = torch.randn(1, 9 + 12, 32)
    with torch.profiler.profile() as prof, torch.inference_mode():
        block(x, (torch.zeros(12, 16, dtype=torch.bfloat16),) * 2)
    ops = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert not ops & {"aten::repeat_interleave", "aten::repeat", "aten::_unsafe_index"}, ops


def test_profile_reports_every_stage_through_the_real_pipeline(tmp_path):
    summary = _extract(tmp_path / "on.h5", profile=True)
    profile = summary.profile
    assert set(profile["stages_s"]) == set(STAGES)
    assert (profile["images"], profile["batch_size"]) == (len(PHOTOS), 3)
    assert profile["peak_device_memory_bytes"] is None  # CPU
    assert profile["stages_s"]["decode"] > 0 and profile["stages_s"]["forward"] > 0
    assert 0 <= profile["device_idle_share"] <= 1
    assert summary.to_json()["profile"] == profile
    off = _extract(tmp_path / "off.h5", profile=False)
    assert off.profile is None and "profile" not in off.to_json()


def test_batch_size_auto_is_one_on_the_cpu_and_reported(tmp_path):
    summary = _extract(tmp_path / "auto.h5", batch_size=None)
    assert summary.images == len(PHOTOS)
    assert summary.batch_size == 1 and summary.to_json()["batch_size"] == 1


def _extract(out: Path, device: str = "cpu", **run):
    """The library's extract (the whole job), in float32."""
    options = {"batch_size": 3, "workers": 0, "precision": "fp32"} | run
    return library_extract([DATA], out, checkpoint=TINY, size=SIZE, device=device, **options)


def test_extract_profile_and_bf16_weights_from_the_command_line(tmp_path):
    out = tmp_path / "f.h5"
    flags = ["--precision", "bf16", "--batch-size", "auto", "--profile", "--json"]
    result = extract(DATA, "-o", out, *FAST, *flags)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == len(PHOTOS) and "compile_s" not in summary
    assert set(summary["profile"]["stages_s"]) == set(STAGES)
    with open_features(out) as f:
        assert (f.settings["precision"], f.settings["weights_dtype"]) == ("bf16", "bf16")
    flags = ["--weights-dtype", "bf16", "--precision", "fp32"]
    result = extract(DATA, "-o", tmp_path / "g.h5", *FAST, *flags)
    assert "--weights-dtype fp32 or auto" in str(result.exception)


@pytest.mark.slow
def test_compile_pads_the_last_batch_instead_of_recompiling(tmp_path):
    import torch._dynamo

    torch._dynamo.reset()
    out = tmp_path / "f.h5"
    flags = ["--compile", "--batch-size", "3", "--layers", "8,17", "--dtype", "float32", "--json"]
    flags += ["--precision", "fp32"]  # compared with float32: auto is bf16 on some CPUs
    with torch._dynamo.config.patch(error_on_recompile=True):  # 4 images: batches of 3 and 1
        result = extract(*PHOTOS, "-o", out, *FAST, *flags)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compile_s"] > 0
    with open_features(out) as f:
        got = f.read(slice(None))
        order = [PHOTOS.index(p) for p in f.paths]
    cosine = _cosines(got, _reference(_photos())[order])
    assert cosine.min() >= 0.99999, cosine


requires_cuda = pytest.mark.gpu


@requires_cuda
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_zoo_attention_shape_has_a_fused_bf16_kernel_on_the_gpu(arch):
    """No math fallback (which would materialise the N x N scores and repeat kv heads)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    config = get_config(arch)
    n, dh = config.num_tokens(*config.image_size), config.head_dim
    for kv in sorted(set(config.block_kv_heads())):
        q = torch.randn(2, config.num_heads, n, dh, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, kv, n, dh, device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(fused):
            out = F.scaled_dot_product_attention(q, k, k, enable_gqa=kv != config.num_heads)
        with sdpa_kernel(SDPBackend.MATH):
            reference = F.scaled_dot_product_attention(q, k, k, enable_gqa=kv != config.num_heads)
        torch.testing.assert_close(out, reference, atol=1e-2, rtol=0)


@requires_cuda
def test_the_gpu_path_with_side_streams_matches_the_cpu_one():
    pixels = _photos()
    cpu = _device_model(load_backbone(TINY), 3).submit(pixels).result()
    gpu_model = load_backbone(TINY, device="cuda")
    device = _device_model(gpu_model, 3, device="cuda")
    jobs = [device.submit(pixels[:3].pin_memory()), device.submit(pixels[3:].pin_memory())]
    got = np.concatenate([job.result() for job in jobs])
    np.testing.assert_allclose(got, cpu, rtol=0, atol=1e-4)


@requires_cuda
def test_bf16_weights_on_the_gpu_stay_within_the_cosine_tolerance():
    pixels = _photos((128, 96))
    want = _device_model(load_backbone(TINY, device="cuda"), 4, "cuda", grid=(8, 6))
    bf16 = load_backbone(TINY, device="cuda", dtype=torch.bfloat16)
    got = _device_model(bf16, 4, "cuda", torch.bfloat16, grid=(8, 6))
    cosine = _cosines(got.submit(pixels).result(), want.submit(pixels).result())
    assert cosine.min() >= BF16_MIN_COSINE, cosine


@requires_cuda
@pytest.mark.slow
def test_cuda_graphs_through_reduce_overhead_give_the_eager_features():
    pixels = _photos()
    eager = _device_model(load_backbone(TINY, device="cuda"), 3, "cuda")
    graphs = _device_model(load_backbone(TINY, device="cuda"), 3, "cuda", compile="reduce-overhead")
    graphs.warm_up(SIZE)
    jobs = [graphs.submit(pixels[:3]), graphs.submit(pixels[3:])]  # two replays in flight
    got = np.concatenate([job.result() for job in jobs])
    want = np.concatenate([eager.submit(pixels[:3]).result(), eager.submit(pixels[3:]).result()])
    assert _cosines(got, want).min() >= 0.99999


@requires_cuda
def test_extract_on_the_gpu_profiles_every_device_stage_with_an_auto_batch(tmp_path):
    summary = _extract(tmp_path / "g.h5", "cuda", batch_size=None, workers=1, profile=True)
    assert summary.images == len(PHOTOS)
    stages = summary.profile["stages_s"]
    assert stages["upload"] > 0 and stages["forward"] > 0 and stages["download"] > 0
    assert 0 <= summary.profile["device_idle_share"] <= 1


@requires_cuda
def test_submitting_a_batch_never_waits_for_the_gpu():
    """No blocking copy or stream sync while queueing: the host runs ahead of the device."""
    pixels = _photos()
    device = _device_model(load_backbone(TINY, device="cuda"), 2, "cuda", torch.bfloat16)
    device.submit(pixels[:2].pin_memory()).result()  # warm-up: allocators, kernels
    first, second = pixels[:2].pin_memory(), pixels[2:].pin_memory()
    torch.cuda.set_sync_debug_mode("error")
    try:
        jobs = [device.submit(first), device.submit(second)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(len(job.result()) == 2 for job in jobs)


class _RunsOutOfMemory(torch.nn.Module):
    """The tiny model, but raising CUDA's out-of-memory error above `fits` images, as a GPU
    does; no part of the project is mocked."""

    def __init__(self, model: torch.nn.Module, fits: int) -> None:
        super().__init__()
        self.model, self.fits, self.calls = model, fits, []

    def forward_kept(self, pixels: torch.Tensor, *args):
        self.calls.append(len(pixels))
        if len(pixels) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model.forward_kept(pixels, *args)


def test_out_of_memory_halves_the_batch_once_and_keeps_every_image():
    """Catches: the halving losing or repeating images, halving again on every batch (the
    smaller size not remembered), or giving up above one image."""
    pixels = _photos()  # 4 images
    flaky = _RunsOutOfMemory(load_backbone(TINY), fits=1)
    device = _device_model(flaky, batch_size=4)
    got = device.submit(pixels).result()
    np.testing.assert_allclose(got, _reference(pixels), rtol=0, atol=1e-5)
    assert flaky.calls == [4, 2, 1, 1, 1, 1] and device.chunk == 1
    flaky.calls.clear()
    device.submit(pixels[:2]).result()
    assert flaky.calls == [1, 1]  # remembered: no new attempt at 2
    never = _device_model(_RunsOutOfMemory(load_backbone(TINY), fits=0), batch_size=2)
    with pytest.raises(Sapiens2Error, match="out of memory on a single image"):
        never.submit(pixels[:2])
