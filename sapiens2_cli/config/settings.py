"""The settings an output records, declared once: each field's file key, whether a resume
must match it, and its one-line meaning (docs/format.md's settings table is checked against
these by a test).

The key in the file is the field's name: an HDF5 root attribute, or a key of
manifest.json's "settings" object. Fields that are None are not written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields


def _meta(doc: str, resume: str | None = None) -> dict:
    """A settings field's metadata: `resume` names the flag that sets it when a resume
    must match it."""
    return {"doc": doc, "resume": resume}


@dataclass(frozen=True)
class OutputSettings:
    """Everything that defines the numbers in an output, plus what describes the run."""

    arch: str = field(default=None, metadata=_meta("zoo name", "--arch"))
    checkpoint: str = field(default=None, metadata=_meta("file name of the weights"))
    checkpoint_sha256: str = field(
        default=None, metadata=_meta("sha256 of that file", "--checkpoint/--arch")
    )
    image_size: list[int] = field(default=None, metadata=_meta("model input size", "--size"))
    grid_size: list[int] = field(default=None, metadata=_meta("token grid"))
    embed_dim: int = field(default=None, metadata=_meta("D"))
    mean: list[float] = field(default=None, metadata=_meta("RGB mean subtracted"))
    std: list[float] = field(default=None, metadata=_meta("RGB std divided by"))
    resize: str = field(default=None, metadata=_meta("`stretch` or `letterbox`", "--resize"))
    jpeg_draft: bool = field(
        default=False,
        metadata=_meta("JPEGs decoded at a reduced scale before the resize", "--jpeg-draft"),
    )
    layers: list[int] = field(
        default=None, metadata=_meta("block indices, non-negative", "--layers")
    )
    tokens: str = field(default=None, metadata=_meta("`patch`, `all`, `cls` or `mean`", "--tokens"))
    layout: str = field(default=None, metadata=_meta("`tokens` or `map`", "--layout"))
    dtype: str = field(default=None, metadata=_meta("storage dtype of `features`", "--dtype"))
    pool: int = field(
        default=1, metadata=_meta("patch tokens averaged over KxK blocks (1: none)", "--pool")
    )
    precision: str = field(default=None, metadata=_meta("how the model ran", "--precision"))
    weights_dtype: str = field(
        default=None, metadata=_meta("the dtype the weights were loaded in", "--weights-dtype")
    )
    boxes: str | None = field(default=None, metadata=_meta("file name of the box file"))
    boxes_sha256: str | None = field(
        default=None, metadata=_meta("sha256 of the box file", "--boxes")
    )
    box_padding: float | None = field(
        default=None, metadata=_meta("the crop's size as a factor of the box", "--box-padding")
    )
    video_fps: float = field(
        default=1.0,
        metadata=_meta(
            "video frames kept per second of presentation time (0: every frame)",
            "--fps/--every-frame",
        ),
    )
    image_column: str | None = field(
        default=None, metadata=_meta("Parquet / Arrow inputs' image column", "--image-column")
    )
    key_column: str | None = field(
        default=None, metadata=_meta("Parquet / Arrow column whose values are keys", "--key-column")
    )
    tool_version: str = field(
        default=None, metadata=_meta("sapiens2-cli version that created the output")
    )
    format_version: int = field(default=None, metadata=_meta("version of this file format"))
    complete: bool = field(
        default=False,
        metadata=_meta("true once a run ended with every input given a row or a failure record"),
    )
    part: list[int] | None = field(default=None, metadata=_meta("part k of N"))
    parts: list[str] | None = field(
        default=None, metadata=_meta("the parts, relative to the join's folder")
    )
    merge: str | None = field(default=None, metadata=_meta("`virtual` or `copy`"))
    projection: str | None = field(
        default=None, metadata=_meta("the --project file, relative to OUT's folder if it can be")
    )
    projection_sha256: str | None = field(
        default=None, metadata=_meta("sha256 of the projection file", "--project")
    )

    def to_dict(self) -> dict:
        """The settings as written to a file: JSON-able values, None fields left out."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.value if hasattr(value, "value") else value
        return out


def resume_keys() -> dict[str, str]:
    """Settings a resume must match, with the flag that sets each."""
    return {f.name: f.metadata["resume"] for f in fields(OutputSettings) if f.metadata["resume"]}


def settings_docs() -> dict[str, str]:
    """Each settings key's one-line meaning."""
    return {f.name: f.metadata["doc"] for f in fields(OutputSettings)}


def difference(existing: dict, wanted: dict, keys: Iterable[str] | None = None) -> str | None:
    """The first setting a resume must match (of `keys`, default all) that differs between
    `existing` and `wanted`, phrased for an error message, or None if they agree."""
    flags = resume_keys()
    defaults = {f.name: f.default for f in fields(OutputSettings)}  # for older outputs
    for key in flags if keys is None else [k for k in keys if k in flags]:
        there, now = existing.get(key, defaults[key]), wanted.get(key, defaults[key])
        if there != now:
            return f"{flags[key]} ({key} is {there!r} there, {now!r} now)"
    return None
