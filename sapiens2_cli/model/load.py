"""Loading a checkpoint's weights into the backbone: one file mapping, zero copy where the
stored dtype is the one asked for (docs/performance.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.checkpoint import CheckpointInfo, inspect_checkpoint, read_header

#: safetensors dtype names the loader reads; anything else is refused in one line.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def load_backbone(
    path: str | Path,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sapiens2Backbone:
    """Build the backbone a safetensors checkpoint describes and fill it with its weights.

    The model is built on the meta device and given the tensors `read_weights` returns,
    so peak host memory stays at one copy of the weights in the target dtype (none when
    the file already holds it). Returns the model in eval mode; `model.checkpoint` holds
    the CheckpointInfo.
    """
    info = inspect_checkpoint(path, arch)
    device = torch.device(device)
    model = Sapiens2Backbone(info.config, device="meta")
    target = {n: torch.float32 if n == "rope_embed.periods" else dtype for n in model.state_dict()}
    model.load_state_dict(read_weights(info, target, device), strict=True, assign=True)
    model.checkpoint = info
    return model.eval()


def read_weights(
    info: CheckpointInfo, target: dict[str, torch.dtype], device: torch.device
) -> dict[str, torch.Tensor]:
    """The backbone tensors `target` names, in its dtypes, on `device`, from one file mapping.

    The file is mapped once (copy-on-write, so nothing is read twice and nothing written
    back). On the CPU a tensor already in its target dtype is a view of the mapping (zero
    copy: its pages are the page cache); the others are converted into one allocation per
    target dtype. On a GPU each tensor goes
    through one reused pinned buffer, is copied to the device, and cast there.
    """
    entries = _entries(info, target)
    size = info.path.stat().st_size
    data = torch.from_file(str(info.path), shared=False, size=size, dtype=torch.uint8)
    if device.type != "cpu":
        return _send(data, entries, target, device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _convert(data, entries, target)
    finally:
        torch.set_num_threads(threads)


def _convert(
    data: torch.Tensor, entries: list[_Entry], target: dict[str, torch.dtype]
) -> dict[str, torch.Tensor]:
    """CPU: views of the mapping, or copies into one allocation per target dtype.

    Runs on one thread: the cost is first-touching the new memory, which the kernel
    serializes; a second thread doubled the CPU time and lost wall time (docs/performance.md).
    """
    state = {}
    for dtype in set(target.values()):
        converted = [e for e in entries if target[e.name] == dtype and e.dtype != dtype]
        flat = torch.empty(sum(e.numel for e in converted), dtype=dtype)
        offset = 0
        for e in entries:
            if target[e.name] != dtype:
                continue
            source = _typed(data[e.begin : e.end], e.dtype, e.shape)
            if e.dtype == dtype:
                state[e.name] = source
                continue
            state[e.name] = flat[offset : offset + e.numel].view(e.shape).copy_(source)
            offset += e.numel
    return state


@dataclass(frozen=True)
class _Entry:
    """One tensor's place in the file: absolute byte range, stored dtype and shape."""

    name: str  # backbone key (prefix removed)
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _entries(info: CheckpointInfo, target: dict[str, torch.dtype]) -> list[_Entry]:
    """The header's entries for the tensors in `target`, in file order, checked against
    the file's length (reading a mapping past the end would kill the process)."""
    header, size = read_header(info.path), info.path.stat().st_size
    entries = []
    for name in target:
        stored = header[info.prefix + name]
        if stored.dtype not in SAFETENSORS_DTYPES:
            raise Sapiens2Error(
                f"{info.path}: {info.prefix + name} is stored as {stored.dtype}, not a "
                f"floating-point type this loader reads ({', '.join(SAFETENSORS_DTYPES)})"
            )
        if stored.end > size:
            raise Sapiens2Error(f"{info.path} ended early: download it again")
        dtype = SAFETENSORS_DTYPES[stored.dtype]
        entries.append(_Entry(name, dtype, stored.shape, stored.begin, stored.end))
    return sorted(entries, key=lambda e: e.begin)


def _typed(raw: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Bytes as a tensor of `dtype`; a copy only where the bytes are not aligned for it."""
    if raw.storage_offset() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(shape)


def _send(
    data: torch.Tensor,
    entries: list[_Entry],
    target: dict[str, torch.dtype],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Each tensor via one reused pinned buffer to `device`, then cast there."""
    staging = torch.empty(
        max(e.end - e.begin for e in entries), dtype=torch.uint8, pin_memory=device.type == "cuda"
    )
    state = {}
    for e in entries:
        chunk = staging[: e.end - e.begin].copy_(data[e.begin : e.end])
        sent = chunk.view(e.dtype).view(e.shape).to(device, copy=True)  # synchronous
        state[e.name] = sent.to(target[e.name])
    return state
