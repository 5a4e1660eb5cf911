"""What a Sapiens2 checkpoint holds, from its header: the architecture, inferred from tensor
shapes, and where each tensor lies (what `model.load` maps). Safetensors only.

Pretrain checkpoints hold the backbone keys as they are; task checkpoints (pose, seg,
normal, pointmap, matting) prefix them with `backbone.` beside a `decode_head.*` part we
ignore. Weights in transformers' layout (a save_pretrained folder or its model.safetensors)
are read through `model/transformers_format.py`. Nothing here unpickles: `.pt`/`.bin`/`.pth`
files are refused.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.backbone import Sapiens2Backbone
from sapiens2_cli.model.config import Sapiens2Config, get_config, match_arch

if TYPE_CHECKING:
    from sapiens2_cli.model.transformers_format import TransformersLayout

TASK_PREFIX = "backbone."
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
_TOKENIZER_BLOCK_KEY = re.compile(r"^tokenizer\.blocks\.(\d+)\.")
#: A task checkpoint's head names its task: decode_head.conv_pose.weight, ...
_TASK_HEAD_KEY = re.compile(r"^decode_head\.conv_(pose|seg|normal|pointmap|matting)\.")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's header says, read without loading any tensor data."""

    path: Path
    config: Sapiens2Config
    arch: str | None  # zoo name, or None for a custom size
    prefix: str  # "" for pretrain files, "backbone." for task files
    dtypes: tuple[str, ...]  # safetensors dtypes of the stored weights, e.g. ("F32",)
    num_parameters: int  # backbone parameters (the rope periods buffer excluded)
    layout: TransformersLayout | None = None  # set: transformers' layout, read through it
    task: str | None = None  # the head's task for a task checkpoint, when it tells

    def describe(self) -> str:
        c = self.config
        size = f"arch {self.arch}" if self.arch else "a custom size"
        return (
            f"{size} (D={c.embed_dim}, {c.num_layers} layers, {c.num_heads} heads, "
            f"FFN {c.ffn_dim}{', 4K tokenizer' if c.use_tokenizer else ''})"
        )


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header lists it: stored dtype name, shape, absolute byte range."""

    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Every tensor the file lists, by its full key. Read by hand because safetensors does
    not expose where a tensor lies; call `_open` first, whose safetensors checks (JSON,
    offsets, length) this then relies on."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    return {
        name: TensorEntry(
            entry["dtype"], tuple(entry["shape"]), *(data_start + o for o in entry["data_offsets"])
        )
        for name, entry in header.items()
        if name != "__metadata__"
    }


def _open(path: Path):
    """safe_open with every way a file can be wrong turned into one Sapiens2Error."""
    if not path.exists():
        raise Sapiens2Error(
            f"checkpoint {path} does not exist: check the path or run `sapiens2 download`"
        )
    if path.is_dir():
        raise Sapiens2Error(f"checkpoint {path} is a folder: pass the .safetensors file inside it")
    with open(path, "rb") as f:
        magic = f.read(9)
    # A safetensors header length can start with the same bytes as a zip or a pickle; its
    # JSON header, at byte 8, tells them apart.
    pickled = magic[:2] == b"PK" or magic[:1] == b"\x80"
    if path.suffix.lower() in PICKLE_SUFFIXES or (pickled and magic[8:9] != b"{"):
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
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            problems.append(f"{k} has shape {list(found[k])}, expected {list(expected[k])}")
        raise Sapiens2Error(f"{path} is not a Sapiens2 backbone: {'; '.join(problems)}")


def inspect_checkpoint(path: str | Path, arch: str | None = None) -> CheckpointInfo:
    """Read a checkpoint's header (no tensor data) and say which backbone it holds.

    Raises Sapiens2Error if the file is missing, pickled, corrupt, not a Sapiens2
    backbone, or not the `arch` asked for.
    """
    path = Path(path)
    if path.is_dir() or path.name.endswith(".safetensors.index.json"):
        return _check_arch(_inspect_transformers(path), arch)
    with _open(path):
        header = read_header(path)
    if _written_by_transformers(header):
        return _check_arch(_inspect_transformers(path), arch)
    prefix, names = _backbone_keys(list(header), path)
    shapes = {n: list(header[prefix + n].shape) for n in names}
    dtypes = {header[prefix + n].dtype for n in names}
    task = next((m[1] for k in header if (m := _TASK_HEAD_KEY.match(k))), None)
    info = _checked_info(path, _infer_config(shapes, path), shapes, prefix, dtypes, task)
    return _check_arch(info, arch)


def _checked_info(
    path: Path,
    config: Sapiens2Config,
    shapes: dict[str, list[int]],
    prefix: str,
    dtypes: set[str],
    task: str | None,
    layout: TransformersLayout | None = None,
) -> CheckpointInfo:
    """The CheckpointInfo of backbone tensors of `shapes`, once they are checked to be
    exactly those of `config`'s backbone."""
    expected = {
        k: list(v.shape) for k, v in Sapiens2Backbone(config, device="meta").state_dict().items()
    }
    _check_keys(expected, shapes, path)
    return CheckpointInfo(
        path=path,
        config=config,
        arch=config.name,
        prefix=prefix,
        dtypes=tuple(sorted(dtypes)),
        num_parameters=sum(math.prod(s) for k, s in shapes.items() if k != "rope_embed.periods"),
        layout=layout,
        task=task,
    )


def _written_by_transformers(header: dict[str, TensorEntry]) -> bool:
    """transformers' names, or the upstream names without the rope periods that
    transformers leaves out (`model/transformers_format.py`)."""
    if any(p + "embeddings.patch_embeddings.weight" in header for p in ("", "model.")):
        return True
    return any(
        p + "patch_embed.projection.weight" in header and p + "rope_embed.periods" not in header
        for p in ("", TASK_PREFIX)
    )


def _check_arch(info: CheckpointInfo, arch: str | None) -> CheckpointInfo:
    """`info`, or a Sapiens2Error when it is not the `arch` asked for."""
    path = info.path
    if arch is not None:
        wanted = get_config(arch)
        if info.arch != wanted.name:
            raise Sapiens2Error(
                f"{path} holds {info.describe()}, not arch {wanted.name}: "
                f"drop --arch or pass --arch {info.arch or '<matching arch>'}"
            )
    return info


def _inspect_transformers(path: Path) -> CheckpointInfo:
    """CheckpointInfo of a save_pretrained folder (or its index file) or of a lone
    transformers .safetensors file: arch from the shapes, checked against config.json."""
    from sapiens2_cli.model.transformers_format import (
        INDEX_FILE,
        TransformersLayout,
        apply_config,
        config_task,
        read_layout,
        weight_files,
    )

    if path.is_dir() or path.name == INDEX_FILE:
        folder = path if path.is_dir() else path.parent
        files, config_file = weight_files(folder)
        where = folder
    else:
        files, config_file, where = (path,), None, path
    headers = []
    for file in files:
        with _open(file):
            headers.append(read_header(file))
    prefix, parts, shapes = read_layout(files, headers, where)
    config = apply_config(_infer_config(shapes, where), config_file)
    by_file = dict(zip(files, headers, strict=True))
    dtypes = {by_file[p.file][p.key].dtype for ps in parts.values() for p in ps}
    task = config_task(config_file) or next(
        (m[1] for h in headers for k in h if (m := _TASK_HEAD_KEY.match(k))), None
    )
    layout = TransformersLayout(files, config_file, parts, task)
    return _checked_info(where, config, shapes, prefix, dtypes, task, layout)
