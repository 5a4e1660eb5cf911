"""Sapiens2 weights as Hugging Face transformers writes them (`Sapiens2Model`,
`save_pretrained`), read as the upstream layout this project computes with.

transformers holds the weights under its own names: it renames the upstream keys, splits
the fused SwiGLU input projection `ffn.w12` into `mlp.gate_proj` (its first half) and
`mlp.up_proj` (its second), and drops the `rope_embed.periods` buffer, recomputing it from
`rope_theta`. Its `save_pretrained` writes the upstream names back by default
(save_original_format=True) but still without the periods; with
save_original_format=False, or from a model with a PEFT adapter attached, it writes its
own names. Both are read here. `NAME_TABLE` is the inverse of its conversion, written from
it: each upstream key and the transformers key(s) it is read from (two keys are joined on
dim 0, gate first); the periods are computed from the config's rope_theta as the upstream
module computes them. Every other tensor stays a view of the file mapping (`model/load.py`),
so the lean loading holds for this layout too; only the joined `w12` tensors are copied.

Accepted: a `save_pretrained` folder (`config.json` with `model.safetensors`, or with
`model.safetensors.index.json` and its shards), or a lone `.safetensors` file it wrote
(arch from its shapes, rope_theta 100). Task models (`Sapiens2ForPoseEstimation`, ...) hold
the backbone under `model.` (`backbone.` once written back); their heads are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import Sapiens2Config, get_config, match_arch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_NAME = re.compile(r"^model-\d+-of-\d+\.safetensors$")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MODEL_TYPE = "sapiens2"
#: The key that marks a transformers-layout backbone (after the task prefix, if any).
MARKER = "embeddings.patch_embeddings.weight"
#: transformers' task models keep the backbone under this prefix (`base_model_prefix`).
TASK_PREFIX = "model."
PREFIXES = (TASK_PREFIX, "")
#: save_pretrained's default (save_original_format=True) writes the upstream names back,
#: the task prefix `backbone.` included, but not the rope periods.
UPSTREAM_MARKER = "patch_embed.projection.weight"
UPSTREAM_TASK_PREFIX = "backbone."
#: Task model class -> the task name `sapiens2 download --task` uses.
TASK_CLASSES = {
    "Sapiens2ForPoseEstimation": "pose",
    "Sapiens2ForSemanticSegmentation": "seg",
    "Sapiens2ForNormalEstimation": "normal",
    "Sapiens2ForPointmapEstimation": "pointmap",
    "Sapiens2ForImageMatting": "matting",
}
#: transformers keys that carry no backbone weight: the masked-modelling token.
IGNORED = ("embeddings.mask_token",)

#: Upstream key -> transformers key(s), `{i}` a block index. Two keys: joined on dim 0.
#: `rope_embed.periods` has no transformers key: rope_theta ** (4i / Dh), i < Dh/4.
NAME_TABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cls_token", ("embeddings.cls_token",)),
    ("storage_tokens", ("embeddings.register_tokens",)),
    ("patch_embed.projection.weight", ("embeddings.patch_embeddings.weight",)),
    ("patch_embed.projection.bias", ("embeddings.patch_embeddings.bias",)),
    ("blocks.{i}.ln1.weight", ("model.layer.{i}.norm1.weight",)),
    ("blocks.{i}.attn.wq.{p}", ("model.layer.{i}.attention.q_proj.{p}",)),
    ("blocks.{i}.attn.wk.{p}", ("model.layer.{i}.attention.k_proj.{p}",)),
    ("blocks.{i}.attn.wv.{p}", ("model.layer.{i}.attention.v_proj.{p}",)),
    ("blocks.{i}.attn.q_norm.weight", ("model.layer.{i}.attention.q_norm.weight",)),
    ("blocks.{i}.attn.k_norm.weight", ("model.layer.{i}.attention.k_norm.weight",)),
    ("blocks.{i}.attn.proj.{p}", ("model.layer.{i}.attention.o_proj.{p}",)),
    ("blocks.{i}.attn.gamma.weight", ("model.layer.{i}.layer_scale1.lambda1",)),
    ("blocks.{i}.ln2.weight", ("model.layer.{i}.norm2.weight",)),
    ("blocks.{i}.ffn.w12.{p}", ("model.layer.{i}.mlp.gate_proj.{p}",
                                "model.layer.{i}.mlp.up_proj.{p}")),
    ("blocks.{i}.ffn.w3.{p}", ("model.layer.{i}.mlp.down_proj.{p}",)),
    ("ln1.weight", ("norm.weight",)),
)  # fmt: skip

#: config.json fields whose value is fixed by what this project computes.
FIXED_FIELDS = {
    "hidden_act": "silu",
    "use_gated_mlp": True,
    "use_qk_norm": True,
    "query_bias": True,
    "key_bias": True,
    "value_bias": True,
    "proj_bias": True,
    "mlp_bias": True,
    "num_channels": 3,
}


@dataclass(frozen=True)
class Part:
    """One stored tensor an upstream tensor is read from."""

    file: Path
    key: str  # its full name in that file


@dataclass(frozen=True)
class TransformersLayout:
    """Where each upstream tensor lies in a transformers checkpoint, for `model.load`."""

    files: tuple[Path, ...]  # the weight files: one, or the shards in index order
    config_file: Path | None  # None for a lone .safetensors file
    parts: Mapping[str, tuple[Part, ...]]  # upstream key -> parts joined on dim 0
    task: str | None  # "pose", ... when the weights are a task model's


def _compile_table() -> list[tuple[re.Pattern, str, int]]:
    """transformers-name regex -> (upstream template, index of the part), for reading."""
    rules = []
    for upstream, names in NAME_TABLE:
        for index, name in enumerate(names):
            pattern = re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)")
            pattern = pattern.replace(r"\{p\}", r"(?P<p>weight|bias)")
            rules.append((re.compile(f"^{pattern}$"), upstream, index))
    return rules


_RULES = _compile_table()


def upstream_name(name: str) -> tuple[str, int] | None:
    """The upstream key a transformers key belongs to and its place among the parts."""
    for pattern, upstream, index in _RULES:
        if m := pattern.match(name):
            return upstream.format(**m.groupdict()), index
    return None


def transformers_names(upstream: str) -> tuple[str, ...]:
    """The transformers key(s) an upstream key is read from (the forward table)."""
    for template, names in NAME_TABLE:
        pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)")
        pattern = pattern.replace(r"\{p\}", r"(?P<p>weight|bias)")
        if m := re.match(f"^{pattern}$", upstream):
            return tuple(n.format(**m.groupdict()) for n in names)
    return ()


def is_transformers_keys(keys) -> bool:
    keys = set(keys)
    return MARKER in keys or TASK_PREFIX + MARKER in keys


# --- the files ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Sapiens2Error(f"{path} is not readable JSON ({e}): download it again") from None
    if not isinstance(data, dict):
        raise Sapiens2Error(f"{path} is not a JSON object: download it again")
    return data


def weight_files(folder: Path) -> tuple[tuple[Path, ...], Path | None]:
    """The weight files of a save_pretrained folder and its config.json (checked to be a
    Sapiens2 config), or one fix-it Sapiens2Error."""
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        if (folder / ADAPTER_FILES[0]).is_file():
            raise _adapter_error(folder)
        raise Sapiens2Error(
            f"checkpoint {folder} is a folder without {CONFIG_FILE}: pass the .safetensors "
            "file inside it, or a transformers save_pretrained folder"
        )
    config = _read_json(config_file)
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        raise Sapiens2Error(
            f"{config_file} describes a transformers '{model_type}' model, not Sapiens2 "
            f"(model_type '{MODEL_TYPE}'): pass a Sapiens2 checkpoint"
        )
    if (folder / WEIGHTS_FILE).is_file():
        return (folder / WEIGHTS_FILE,), config_file
    index_file = folder / INDEX_FILE
    if index_file.is_file():
        weight_map = _read_json(index_file).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise Sapiens2Error(f"{index_file} has no weight_map: download it again")
        shards = tuple(folder / name for name in dict.fromkeys(sorted(weight_map.values())))
        for shard in shards:
            if not shard.is_file():
                raise Sapiens2Error(
                    f"{index_file} names the shard {shard.name}, which is missing from "
                    f"{folder}: download every shard it lists"
                )
        return shards, config_file
    if (folder / ADAPTER_FILES[0]).is_file() or (folder / ADAPTER_FILES[1]).is_file():
        raise _adapter_error(folder)
    raise Sapiens2Error(
        f"{folder} has {CONFIG_FILE} but neither {WEIGHTS_FILE} nor {INDEX_FILE}: save the "
        "model with save_pretrained (safetensors) or download its weights"
    )


def identity_files(folder: Path) -> list[Path]:
    """The files a save_pretrained folder's weights depend on, for its identity (sha256)."""
    files, config_file = weight_files(folder)
    index = folder / INDEX_FILE
    return [p for p in (config_file, index if index.is_file() else None, *files) if p]


def _adapter_error(folder: Path) -> Sapiens2Error:
    return Sapiens2Error(
        f"{folder} holds a PEFT adapter without merged weights: merge it into its base model "
        "(model = model.merge_and_unload(); model.save_pretrained(...)) and pass that folder"
    )


# --- the layout and the config ------------------------------------------------------------


def read_layout(
    files: tuple[Path, ...], headers: list[Mapping[str, object]], where: Path
) -> tuple[str, dict[str, tuple[Part, ...]], dict[str, list[int]]]:
    """The task prefix, each upstream key's parts, and the upstream shapes they make
    (joined tensors summed on dim 0), from the files' headers. Keys with no upstream name
    are reported as unexpected by the shape check that follows (`checkpoint._check_keys`).
    """
    keys = {k: (f, h) for f, h in zip(files, headers, strict=True) for k in h}
    prefix = next((p for p in PREFIXES if p + MARKER in keys), "")
    if not prefix and MARKER not in keys and UPSTREAM_TASK_PREFIX + UPSTREAM_MARKER in keys:
        prefix = UPSTREAM_TASK_PREFIX
    found: dict[str, dict[int, Part]] = {}
    shapes_of: dict[str, dict[int, list[int]]] = {}
    renamed: set[str] = set()  # upstream keys read from transformers names
    for key, (file, header) in keys.items():
        if not key.startswith(prefix) or key[len(prefix) :] in IGNORED:
            continue  # a task model's head, or no backbone weight
        name = key[len(prefix) :]
        mapped = upstream_name(name)
        if mapped is not None:
            renamed.add(mapped[0])
        upstream, index = mapped or (name, 0)  # upstream names pass as they are
        found.setdefault(upstream, {})[index] = Part(file, key)
        shapes_of.setdefault(upstream, {})[index] = list(header[key].shape)
    parts, shapes = {}, {}
    for upstream, pieces in found.items():
        names = transformers_names(upstream) if upstream in renamed else (upstream,)
        if sorted(pieces) != list(range(len(names))):
            missing = next(prefix + n for i, n in enumerate(names) if i not in pieces)
            raise Sapiens2Error(f"{where} is not a Sapiens2 backbone: missing {missing}")
        parts[upstream] = tuple(pieces[i] for i in range(len(names)))
        stored = [shapes_of[upstream][i] for i in range(len(names))]
        shapes[upstream] = [sum(s[0] for s in stored), *stored[0][1:]]
    if "blocks.0.attn.q_norm.weight" in shapes and "rope_embed.periods" not in shapes:
        shapes["rope_embed.periods"] = [shapes["blocks.0.attn.q_norm.weight"][0] // 4]
    return prefix, parts, shapes


def config_task(config_file: Path | None) -> str | None:
    """The task a transformers config's model class is for, if any."""
    if config_file is None:
        return None
    archs = _read_json(config_file).get("architectures") or []
    return next((TASK_CLASSES[a] for a in archs if a in TASK_CLASSES), None)


def apply_config(config: Sapiens2Config, config_file: Path | None) -> Sapiens2Config:
    """`config` (read from the shapes) checked against config.json, with the two values the
    shapes cannot tell (rope_theta, rms_norm_eps) taken from it. One fix-it error for a
    field that disagrees with the tensors or asks for something Sapiens2 does not compute."""
    if config_file is None:
        return config
    fields = _read_json(config_file)
    fix = "fix config.json or pass the model.safetensors file alone (arch read from its shapes)"
    for name, value in FIXED_FIELDS.items():
        if name in fields and fields[name] != value:
            raise Sapiens2Error(
                f"{config_file} sets {name} = {fields[name]!r}; a Sapiens2 backbone has "
                f"{value!r}: {fix}"
            )
    heads = fields.get("num_attention_heads", config.num_heads)
    layers = fields.get("num_hidden_layers", config.num_layers)
    kv = fields.get("num_key_value_heads_per_layer")
    if kv is None and isinstance(heads, int) and isinstance(layers, int):
        first = fields.get("num_first_full_attention_layers", 8)
        last = fields.get("num_last_full_attention_layers", 8)
        grouped = fields.get("num_key_value_attention_heads", 8)
        kv = [heads if i < first or i >= layers - last else grouped for i in range(layers)]
    patch = fields.get("patch_size", config.patch_size)
    if isinstance(patch, list) and len(set(patch)) == 1:
        patch = patch[0]
    checks = {
        "hidden_size": (fields.get("hidden_size", config.embed_dim), config.embed_dim),
        "num_hidden_layers": (layers, config.num_layers),
        "num_attention_heads": (heads, config.num_heads),
        "intermediate_size": (fields.get("intermediate_size", config.ffn_dim), config.ffn_dim),
        "num_register_tokens": (
            fields.get("num_register_tokens", config.num_storage_tokens),
            config.num_storage_tokens,
        ),
        "patch_size": (patch, config.patch_size),
        "num_key_value_heads_per_layer": (list(kv), list(config.block_kv_heads())),
    }
    for name, (said, found) in checks.items():
        if said != found:
            raise Sapiens2Error(
                f"{config_file} says {name} = {said}, but the weights have {found}: the config "
                f"does not belong to these tensors; {fix}"
            )
    rope = fields.get("rope_theta", config.rope_base)
    eps = fields.get("rms_norm_eps", config.norm_eps)
    config = replace(config, rope_base=float(rope), norm_eps=float(eps))
    arch = match_arch(config)
    if arch is None and config.name is not None:  # rope or eps of its own: a custom size
        return replace(config, name=None)
    if arch is not None:
        return replace(config, image_size=get_config(arch).image_size, name=arch)
    return config
