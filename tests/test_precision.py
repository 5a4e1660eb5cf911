"""`--precision` on the CPU: auto follows the CPU's native bf16 support; fp16 is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sapiens2_cli import Sapiens2Error
from sapiens2_cli import device as device_module
from sapiens2_cli.device import cpu_bf16_feature, cpu_flags, resolve_precision

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
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == torch.float32  # explicit choices stay as asked
    assert resolve_precision("bf16", CPU) == torch.bfloat16


def test_auto_on_this_cpu_is_what_its_cpuinfo_says():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", text, re.MULTILINE)
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if native else torch.float32)


def test_fp16_on_cpu_is_one_error_naming_the_choices():
    with pytest.raises(Sapiens2Error, match="fp16 is not supported on the CPU: use bf16 or fp32"):
        resolve_precision("fp16", CPU)
