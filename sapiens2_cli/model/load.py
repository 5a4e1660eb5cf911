"""Loading a checkpoint's weights into the backbone: one mapping per file, zero copy where
the stored dtype is the one asked for (docs/performance.md). Transformers-layout weights
map the same way; only the tensors it splits (`ffn.w12`) are joined into a copy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.checkpoint import CheckpointInfo, inspect_checkpoint, read_header
from sapiens2_cli.model.layers.rope import rope_periods

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
    """Build the backbone a checkpoint describes and fill it with its weights.

    `path`: an upstream-format .safetensors file (pretrain or task), or transformers-format
    weights (a save_pretrained folder, its index file, or its model.safetensors).

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

    Each file is mapped once (copy-on-write, so nothing is read twice and nothing written
    back). On the CPU a tensor already in its target dtype and stored in one piece is a
    view of the mapping (zero copy: its pages are the page cache); the others are converted
    (or joined) into one allocation per target dtype. On a GPU each piece goes
    through one reused pinned buffer, is copied to the device, and cast there.
    """
    computed = {}
    periods = "rope_embed.periods"
    if info.layout is not None and periods in target and periods not in info.layout.parts:
        value = rope_periods(info.config.head_dim, info.config.rope_base)  # transformers drops it
        computed[periods] = value.to(device, target[periods])
    entries = _entries(info, {n: d for n, d in target.items() if n not in computed})
    files = dict.fromkeys(p.file for e in entries for p in e.pieces)
    data = {
        f: torch.from_file(str(f), shared=False, size=f.stat().st_size, dtype=torch.uint8)
        for f in files
    }
    if device.type != "cpu":
        return _send(data, entries, target, device) | computed
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _convert(data, entries, target) | computed
    finally:
        torch.set_num_threads(threads)


def _convert(
    data: dict[Path, torch.Tensor], entries: list[_Entry], target: dict[str, torch.dtype]
) -> dict[str, torch.Tensor]:
    """CPU: views of the mapping, or copies into one allocation per target dtype.

    Runs on one thread: the cost is first-touching the new memory, which the kernel
    serializes; a second thread doubled the CPU time and lost wall time (docs/performance.md).
    """
    state = {}
    for dtype in set(target.values()):
        converted = [e for e in entries if target[e.name] == dtype and not e.is_view(dtype)]
        flat = torch.empty(sum(e.numel for e in converted), dtype=dtype)
        offset = 0
        for e in entries:
            if target[e.name] != dtype:
                continue
            sources = [_typed(data[p.file][p.begin : p.end], p.dtype, p.shape) for p in e.pieces]
            if e.is_view(dtype):
                state[e.name] = sources[0]
                continue
            out = flat[offset : offset + e.numel].view(e.shape)
            row = 0
            for source in sources:  # joined on dim 0, as upstream holds them
                out[row : row + len(source)].copy_(source)
                row += len(source)
            state[e.name] = out
            offset += e.numel
    return state


@dataclass(frozen=True)
class _Piece:
    """One stored tensor: its file, absolute byte range, stored dtype and shape."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class _Entry:
    """One backbone tensor: the stored piece(s) it is, joined on dim 0 when several."""

    name: str  # backbone key (prefix removed)
    shape: tuple[int, ...]
    pieces: tuple[_Piece, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def is_view(self, dtype: torch.dtype) -> bool:
        """Whether the tensor can be the mapping itself: one piece, stored in `dtype`."""
        return len(self.pieces) == 1 and self.pieces[0].dtype == dtype


def _entries(info: CheckpointInfo, target: dict[str, torch.dtype]) -> list[_Entry]:
    """The headers' entries for the tensors in `target`, in file order, checked against
    each file's length (reading a mapping past the end would kill the process)."""
    if info.layout is None:
        where = {n: ((info.path, info.prefix + n),) for n in target}
    else:
        where = {n: tuple((p.file, p.key) for p in info.layout.parts[n]) for n in target}
    headers = {
        f: (read_header(f), f.stat().st_size) for f in {f for w in where.values() for f, _ in w}
    }
    entries = []
    for name, parts in where.items():
        pieces = []
        for file, key in parts:
            header, size = headers[file]
            stored = header[key]
            if stored.dtype not in SAFETENSORS_DTYPES:
                raise Sapiens2Error(
                    f"{file}: {key} is stored as {stored.dtype}, not a floating-point "
                    f"type this loader reads ({', '.join(SAFETENSORS_DTYPES)})"
                )
            if stored.end > size:
                raise Sapiens2Error(f"{file} ended early: download it again")
            dtype = SAFETENSORS_DTYPES[stored.dtype]
            pieces.append(_Piece(file, dtype, stored.shape, stored.begin, stored.end))
        shape = (sum(p.shape[0] for p in pieces), *pieces[0].shape[1:])
        entries.append(_Entry(name, shape, tuple(pieces)))
    return sorted(entries, key=lambda e: (str(e.pieces[0].file), e.pieces[0].begin))


def _typed(raw: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Bytes as a tensor of `dtype`; a copy only where the bytes are not aligned for it."""
    if raw.storage_offset() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(shape)


def _send(
    data: dict[Path, torch.Tensor],
    entries: list[_Entry],
    target: dict[str, torch.dtype],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Each piece via one reused pinned buffer to `device`, cast there (and joined)."""
    largest = max(p.end - p.begin for e in entries for p in e.pieces)
    staging = torch.empty(largest, dtype=torch.uint8, pin_memory=device.type == "cuda")
    state = {}
    for e in entries:
        sent = []
        for p in e.pieces:
            chunk = staging[: p.end - p.begin].copy_(data[p.file][p.begin : p.end])
            moved = chunk.view(p.dtype).view(p.shape).to(device, copy=True)  # synchronous
            sent.append(moved.to(target[e.name]))
        state[e.name] = sent[0] if len(sent) == 1 else torch.cat(sent)
    return state
