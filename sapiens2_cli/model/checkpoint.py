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

    The model is built on the meta device and each tensor is assigned as it is read, so
    peak host memory stays near one copy of the weights in the target dtype:
    - CPU: tensors map the file (zero copy in the stored dtype; pages load on first use)
      and are cast one at a time;
    - GPU: tensors are read in file order through one reused pinned buffer and copied,
      then cast, on the device, one at a time.
    Returns the model in eval mode; `model.checkpoint` holds the CheckpointInfo.
    """
    info = inspect_checkpoint(path, arch)
    device = torch.device(device)
    model = Sapiens2Backbone(info.config, device="meta")
    names = list(model.state_dict())
    target = {n: torch.float32 if n == "rope_embed.periods" else dtype for n in names}
    if device.type == "cpu":
        with _open(info.path) as f:
            state = {n: f.get_tensor(info.prefix + n).to(target[n]) for n in names}
    else:
        state = _read_through_staging(info, target, device)
    model.load_state_dict(state, strict=True, assign=True)
    model.checkpoint = info
    return model.eval()


def _read_through_staging(
    info: CheckpointInfo, target: dict[str, torch.dtype], device: torch.device
) -> dict[str, torch.Tensor]:
    """Sequential reads into one reused pinned buffer, each tensor then sent to `device`."""
    with open(info.path, "rb", buffering=0) as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data_start = 8 + header_len
        entries = sorted(
            ((header[info.prefix + n], n) for n in target), key=lambda e: e[0]["data_offsets"]
        )
        largest = max(end - begin for (e, _) in entries for begin, end in [e["data_offsets"]])
        staging = torch.empty(largest, dtype=torch.uint8, pin_memory=device.type == "cuda")
        state = {}
        for entry, name in entries:
            begin, end = entry["data_offsets"]
            f.seek(data_start + begin)
            chunk = staging[: end - begin]
            view = memoryview(chunk.numpy())
            filled = 0
            while filled < len(view):
                n = f.readinto(view[filled:])
                if not n:
                    raise Sapiens2Error(f"{info.path} ended early: download it again")
                filled += n
            source = chunk.view(_SAFETENSORS_DTYPES[entry["dtype"]]).view(entry["shape"])
            state[name] = source.to(device, copy=True).to(target[name])
    return state


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
