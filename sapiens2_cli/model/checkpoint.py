"""Reading Sapiens2 checkpoints: safetensors only, architecture inferred from tensor shapes.

Pretrain checkpoints hold the backbone keys as they are; task checkpoints (pose, seg,
normal, pointmap) prefix them with `backbone.` beside a `decode_head.*` part we ignore.
Nothing here unpickles: `.pt`/`.bin`/`.pth` files are refused.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.config import Sapiens2Config, get_config, match_arch

TASK_PREFIX = "backbone."
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
_TOKENIZER_BLOCK_KEY = re.compile(r"^tokenizer\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's header says, read without loading any tensor data."""

    path: Path
    config: Sapiens2Config
    arch: str | None  # zoo name, or None for a custom size
    prefix: str  # "" for pretrain files, "backbone." for task files
    dtypes: tuple[str, ...]  # safetensors dtypes of the stored weights, e.g. ("F32",)
    num_parameters: int  # backbone parameters (the rope periods buffer excluded)

    def describe(self) -> str:
        c = self.config
        size = f"arch {self.arch}" if self.arch else "a custom size"
        return (
            f"{size} (D={c.embed_dim}, {c.num_layers} layers, {c.num_heads} heads, "
            f"FFN {c.ffn_dim}{', 4K tokenizer' if c.use_tokenizer else ''})"
        )


def _open(path: Path):
    """safe_open with every way a file can be wrong turned into one Sapiens2Error."""
    if not path.exists():
        raise Sapiens2Error(
            f"checkpoint {path} does not exist: check the path or run `sapiens2 download`"
        )
    if path.is_dir():
        raise Sapiens2Error(f"checkpoint {path} is a folder: pass the .safetensors file inside it")
    with open(path, "rb") as f:
        magic = f.read(8)
    if path.suffix.lower() in PICKLE_SUFFIXES or magic[:2] == b"PK" or magic[:1] == b"\x80":
        raise Sapiens2Error(
            f"{path} is a pickled PyTorch checkpoint, which is never unpickled here: "
            "download the .safetensors file (`sapiens2 download`) or convert it with "
            "safetensors.torch.save_file in a trusted environment"
        )
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise Sapiens2Error(
            f"{path} is not a readable safetensors file ({e}): it may be truncated or "
            "corrupt; download it again"
        ) from None


def _backbone_keys(keys: list[str], path: Path) -> tuple[str, list[str]]:
    """The key prefix in use and the backbone keys with it removed."""
    if any(k.startswith(TASK_PREFIX) for k in keys):
        return TASK_PREFIX, [k[len(TASK_PREFIX) :] for k in keys if k.startswith(TASK_PREFIX)]
    if "patch_embed.projection.weight" not in keys:
        shown = ", ".join(sorted(keys)[:3]) or "no tensors"
        raise Sapiens2Error(
            f"{path} is not a Sapiens2 backbone: it has no patch_embed.projection.weight "
            f"(first keys: {shown})"
        )
    return "", keys


def _infer_config(shapes: dict[str, list[int]], path: Path) -> Sapiens2Config:
    """Architecture from tensor shapes alone, so custom sizes load as well as the zoo."""
    try:
        embed_dim, _, patch, _ = shapes["patch_embed.projection.weight"]
        head_dim = shapes["blocks.0.attn.q_norm.weight"][0]
        ffn_dim = shapes["blocks.0.ffn.w3.weight"][1]
        num_storage = shapes["storage_tokens"][1]
        num_layers = 1 + max(int(m[1]) for k in shapes if (m := _BLOCK_KEY.match(k)))
        kv_heads = tuple(
            shapes[f"blocks.{i}.attn.wk.weight"][0] // head_dim for i in range(num_layers)
        )
    except (KeyError, ValueError) as e:
        raise Sapiens2Error(
            f"{path} is not a Sapiens2 backbone: cannot read its shape from key {e}"
        ) from None
    tokenizer_ids = {int(m[1]) for k in shapes if (m := _TOKENIZER_BLOCK_KEY.match(k))}
    num_tokenizer = 1 + max(tokenizer_ids) if tokenizer_ids else 0
    config = Sapiens2Config(
        embed_dim=embed_dim,
        num_layers=num_layers,
        num_heads=embed_dim // head_dim,
        ffn_dim=ffn_dim,
        num_tokenizer_layers=num_tokenizer,
        kv_heads=kv_heads,
        patch_size=patch,
        num_storage_tokens=num_storage,
    )
    if kv_heads == replace(config, kv_heads=None).block_kv_heads():
        config = replace(config, kv_heads=None)
    arch = match_arch(config)
    if arch is not None:
        config = replace(config, image_size=get_config(arch).image_size, name=arch)
    return config


def _check_keys(expected: dict[str, list[int]], found: dict[str, list[int]], path: Path) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and list(expected[k]) != list(found[k])]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {list(found[k])}, expected {list(expected[k])}")
        raise Sapiens2Error(f"{path} is not a Sapiens2 backbone: {'; '.join(parts)}")


def inspect_checkpoint(path: str | Path, arch: str | None = None) -> CheckpointInfo:
    """Read a checkpoint's header (no tensor data) and say which backbone it holds.

    Raises Sapiens2Error if the file is missing, pickled, corrupt, not a Sapiens2
    backbone, or not the `arch` asked for.
    """
    path = Path(path)
    with _open(path) as f:
        keys = list(f.keys())
        prefix, names = _backbone_keys(keys, path)
        slices = {n: f.get_slice(prefix + n) for n in names}
        shapes = {n: list(s.get_shape()) for n, s in slices.items()}
        dtypes = {s.get_dtype() for s in slices.values()}
    config = _infer_config(shapes, path)
    expected = {
        k: list(v.shape) for k, v in Sapiens2Backbone(config, device="meta").state_dict().items()
    }
    _check_keys(expected, shapes, path)
    info = CheckpointInfo(
        path=path,
        config=config,
        arch=config.name,
        prefix=prefix,
        dtypes=tuple(sorted(dtypes)),
        num_parameters=sum(math.prod(s) for k, s in shapes.items() if k != "rope_embed.periods"),
    )
    if arch is not None:
        wanted = get_config(arch)
        if info.arch != wanted.name:
            raise Sapiens2Error(
                f"{path} holds {info.describe()}, not arch {wanted.name}: "
                f"drop --arch or pass --arch {info.arch or '<matching arch>'}"
            )
    return info


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
    with open(info.path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data_start, size = 8 + header_len, info.path.stat().st_size
    entries = []
    for name in target:
        entry = header[info.prefix + name]
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise Sapiens2Error(
                f"{info.path}: {info.prefix + name} is stored as {entry['dtype']}, not a "
                f"floating-point type this loader reads ({', '.join(SAFETENSORS_DTYPES)})"
            )
        begin, end = (data_start + o for o in entry["data_offsets"])
        if end > size:
            raise Sapiens2Error(f"{info.path} ended early: download it again")
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        entries.append(_Entry(name, dtype, tuple(entry["shape"]), begin, end))
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


#: safetensors dtype names the loader reads; anything else is refused in one line.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
