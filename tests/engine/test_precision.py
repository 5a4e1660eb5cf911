"""`--precision` on the CPU: auto follows the CPU's native bf16 support; fp16 is refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAKE_CPU_BF16

from sapiens2_cli import Sapiens2Error
from sapiens2_cli.config.choices import Precision
from sapiens2_cli.engine import device as device_module
from sapiens2_cli.engine.device import cpu_bf16_feature, cpu_flags, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "feature"),
    [
        ({"fpu", "avx2", "fma", "avx512f", "avx512bw"}, None),  # AVX-512 without BF16
        ({"avx2", "avx512f", "avx512_bf16"}, "avx512_bf16"),
        ({"avx512_bf16", "amx_tile", "amx_bf16"}, "amx_bf16"),
        ({"amx_tile"}, None),  # AMX tiles with int8 only
        (set(), None),
    ],
)
def test_native_bf16_is_decided_by_the_bf16_flags(flags, feature):
    assert cpu_bf16_feature(flags) == feature


def test_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some avx512_bf16 CPU\n"
        "flags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: amx_bf16\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(
    ("feature", "expected"), [("amx_bf16", torch.bfloat16), (None, torch.float32)]
)
def test_auto_on_cpu_follows_the_feature(monkeypatch, feature, expected):
    monkeypatch.setattr(device_module, "cpu_bf16_feature", lambda: feature)
    assert resolve_precision(Precision.AUTO, CPU).torch == expected
    assert resolve_precision(Precision.FP32, CPU) == Precision.FP32  # explicit stays as asked
    assert resolve_precision(Precision.BF16, CPU) == Precision.BF16


@pytest.mark.skipif(FAKE_CPU_BF16 is not None, reason="CPU flags faked by SAPIENS2_TEST_CPU_BF16")
def test_auto_on_this_cpu_is_what_its_cpuinfo_says():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", text, re.MULTILINE)
    assert resolve_precision(Precision.AUTO, CPU) == (Precision.BF16 if native else Precision.FP32)


def test_fp16_on_cpu_is_one_error_naming_the_choices():
    with pytest.raises(Sapiens2Error, match="fp16 is not supported on the CPU: use bf16 or fp32"):
        resolve_precision(Precision.FP16, CPU)


@pytest.mark.parametrize(
    ("flags", "recorded"), [({"avx2"}, "fp32"), ({"avx2", "amx_bf16"}, "bf16")]
)
def test_extract_with_auto_records_what_the_cpu_flags_give(monkeypatch, tmp_path, flags, recorded):
    """Catches `auto` on CPU ignoring the bf16 flags (or reading them only in the unit under
    test): the output records and computes in bf16 exactly when the CPU has native bf16."""
    from extract_helpers import FAST, FP32, extract
    from paths import DATA

    from sapiens2_cli.output import open_features

    monkeypatch.setattr(device_module, "cpu_flags", lambda cpuinfo=None: set(flags))
    image = DATA / "coffee.jpg"
    outs = {name: tmp_path / f"{name}.h5" for name in ("auto", "fp32")}
    for name, extra in (("auto", []), ("fp32", FP32)):
        result = extract(image, "-o", outs[name], *FAST, "--dtype", "float32", *extra)
        assert result.exit_code == 0, result.output
    with open_features(outs["auto"]) as auto, open_features(outs["fp32"]) as fp32:
        assert auto.settings["precision"] == recorded
        assert auto.settings["weights_dtype"] == recorded
        same = np.array_equal(auto.read([0]), fp32.read([0]))
    assert same == (recorded == "fp32")
