"""Resuming OUT: the settings not given are taken from what OUT records, and the ones
given are compared with it, by one function with one message (`check_resume`).

The job (engine/job.py) asks as soon as each setting is known, so a refusal comes before
the work it would waste: the flags first (before torch is imported), then the precision
(once the device is known), the box file (once read), and last every setting the weights
decide (which block -1 is, the checkpoint's hash).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sapiens2_cli.config.choices import Precision
from sapiens2_cli.config.options import ExtractOptions, declarations
from sapiens2_cli.config.records import difference
from sapiens2_cli.config.settings import stored
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model import ARCHS

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.inputs.sources import Source

log = logging.getLogger(__name__)


def check_resume(
    output: Path, existing: dict | None, asked: dict[str, object], *, every: bool = False
) -> None:
    """Refuse to resume `output`, whose settings are `existing` (None: a new output), with
    the settings `asked` (as files store them); `every`: `asked` is all of them, so a
    setting it lacks is compared as absent, not skipped."""
    problem = resume_problem(existing or {}, asked, every)
    if problem:
        raise Sapiens2Error(
            f"{output} cannot be resumed: {problem}, or pass --overwrite to start again"
        )


def resume_problem(existing: dict, asked: dict[str, object], every: bool = False) -> str | None:
    """Why an output recording `existing` cannot take rows made with `asked`, ending with
    what to do; None if it can (or if there is no output)."""
    if not existing:
        return None
    if existing.get("merge") == "virtual":
        return (
            "it is a virtual join of parts, which cannot grow: rerun the torchrun or "
            "--shard commands that made it"
        )
    if "boxes_sha256" in asked:
        problem = _box_problem(existing, asked["boxes_sha256"])
        if problem:
            return problem
    differs = difference(
        existing, {k: stored(v) for k, v in asked.items()}, None if every else asked
    )
    if differs:
        return (
            f"it was made with different settings: {differs}; rerun with the same settings "
            "(or leave them out to take OUT's)"
        )
    return None


def _box_problem(existing: dict, sha256: str | None) -> str | None:
    """Rows of another kind (plain images, crops from another box file) cannot share OUT."""
    there = existing.get("boxes_sha256")
    if there == sha256:
        return None  # the padding is compared with the other settings
    if there is None:
        return "it holds one row per image (made without --boxes): write crops to another OUT"
    if sha256 is None:
        return (
            f"it holds person crops made with --boxes {existing.get('boxes')}: pass that box "
            "file again to resume"
        )
    return (
        f"it was made with another box file ({existing.get('boxes')}, sha256 "
        f"{str(there)[:12]}…): pass that file to resume"
    )


def box_settings(sources: Sequence[Source]) -> dict[str, object]:
    """The box settings the sources record (`boxes_sha256` None without --boxes)."""
    found = {k: v for s in sources for k, v in s.settings().items() if k.startswith("box")}
    return {"boxes_sha256": None, **found}


def settle_options(opts: ExtractOptions, existing: dict | None, output: Path) -> ExtractOptions:
    """Settings not given taken from OUT (resume) or their declared default; given ones
    checked against OUT wherever neither the device nor the weights are needed for it."""
    existing = existing or {}
    given = {}
    for name, declared in declarations().items():
        if not declared.from_out:
            continue
        key = declared.record_as or name
        value = getattr(opts, key)
        if value is None:
            value = existing.get(key, declared.default)
            value = tuple(value) if name == "layers" else value
        else:
            given[key] = value
        opts = replace(opts, **_option_fields(key, value))
    if opts.size is None and "image_size" in existing:
        opts = replace(opts, size=tuple(existing["image_size"]))
    elif opts.size is not None:
        given["image_size"] = list(opts.size)
    if opts.arch is None and opts.checkpoint is None and existing:
        if existing.get("arch") not in ARCHS:
            raise Sapiens2Error(
                f"{output} was made with the checkpoint {existing.get('checkpoint')}: pass "
                "--checkpoint PATH to resume it"
            )
        opts = replace(opts, arch=existing["arch"])
    elif opts.arch is not None and existing.get("arch") not in (None, "custom"):
        given["arch"] = opts.arch
    given.pop("layers", None)  # which blocks they are depends on the weights: checked later
    check_resume(output, existing, given)
    return opts


def _option_fields(name: str, value: object) -> dict[str, object]:
    """The ExtractOptions fields that hold setting `name`: video_fps is two flags."""
    if name == "video_fps":
        return {"fps": value or None, "every_frame": value == 0}
    return {name: value}


def settle_precision(
    opts: ExtractOptions, existing: dict | None, device: torch.device, output: Path
) -> ExtractOptions:
    """The compute and weights dtypes on `device`: `auto` takes OUT's on a resume, as the
    other settings do (and says so where a new output would get another); given ones are
    checked against OUT."""
    from sapiens2_cli.engine.device import resolve_precision, resolve_weights_dtype

    existing = existing or {}
    precision = opts.precision
    if precision == Precision.AUTO and "precision" in existing:
        precision = Precision.parse(existing["precision"], "--precision")
        here = resolve_precision(Precision.AUTO, device)
        if precision != here:
            log.warning(
                "--precision auto: resuming with %s, the precision OUT was made with "
                "(%s on this machine for a new output)",
                precision,
                here,
            )
    compute = resolve_precision(precision, device)
    weights = opts.weights_dtype
    if weights == Precision.AUTO and "weights_dtype" in existing:
        weights = Precision.parse(existing["weights_dtype"], "--weights-dtype")
    given = {"precision": compute, "weights_dtype": resolve_weights_dtype(weights, compute)}
    check_resume(output, existing, given)
    return replace(opts, **given)
