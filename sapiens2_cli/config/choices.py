"""Every fixed set of choices a flag or an API argument takes, declared once.

Each is a string Enum: members compare equal to their text ("patch" == TokenMode.PATCH),
so they go into settings and files as plain strings, and `parse` turns user text into a
member at the edge (CLI or API) with one error wording for all of them. A member may
carry a short meaning, which the CLI's help lists (`describe`), and the dtype choices
carry their torch (and numpy) dtype, imported only when asked for so `--help` stays fast.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from sapiens2_cli.errors import Sapiens2Error

if TYPE_CHECKING:
    import numpy as np
    import torch

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A string Enum whose `parse` accepts a member or its text, case-insensitively."""

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> Choice:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # a member and its text are the same dict key on every Python

    @classmethod
    def parse(cls: type[C], value: str | C, flag: str) -> C:
        """`value` as a member of this choice; a one-line error naming `flag` otherwise."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if member.value == text:
                return member
        allowed = ", ".join(m.value for m in cls)
        raise Sapiens2Error(f"unknown {flag} {str(value)!r}: use {allowed}")

    @classmethod
    def describe(cls, default: Choice | None = None) -> str:
        """The members with their meanings, for a flag's help: 'a (...), b or c'; with no
        meanings, only which is the default: '(default a)'."""
        if not any(member.meaning for member in cls):
            return "" if default is None else f"(default {default})"
        words = []
        for member in cls:
            notes = [n for n in (member.meaning, "the default" * (member is default)) if n]
            words.append(f"{member.value} ({'; '.join(notes)})" if notes else member.value)
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class TokenMode(Choice):
    """Which tokens of a block's output a row keeps."""

    PATCH = "patch", "the h*w patch tokens"
    ALL = "all", "the prefix tokens and the patches"
    CLS = "cls", "the first prefix token"
    MEAN = "mean", "of the patch tokens"


class Layout(Choice):
    TOKENS = "tokens", "(T, D) per layer"
    MAP = "map", "(D, h, w) per layer; patch tokens only"

    @property
    def feature_axis(self) -> int:
        """The D axis of a batch of rows (k, L, ...): 2 in (k, L, D, h, w), else the last.
        What int8 quantizes per token, a projection multiplies and PCA samples."""
        return 2 if self is Layout.MAP else -1


class ResizeMode(Choice):
    STRETCH = "stretch", "upstream's: to H x W, ignoring the aspect ratio"
    LETTERBOX = "letterbox", "keeps the aspect ratio, pads with the mean colour"


class StorageDtype(Choice):
    FLOAT16 = "float16", "range-checked"
    FLOAT32 = "float32"
    INT8 = "int8", "per-token symmetric, float16 scales beside (docs/format.md)"

    @property
    def torch(self) -> torch.dtype:
        import torch

        return getattr(torch, self.value)

    @property
    def numpy(self) -> np.dtype:
        import numpy as np

        return np.dtype(self.value)


class Engine(Choice):
    """What runs the job's work: this process's loop, or Ray Data tasks and actors."""

    LOCAL = "local", "this process's loop"
    RAY = "ray", "Ray Data tasks and actors: docs/scaling.md"


class OutputFormat(Choice):
    H5 = "h5"
    NPY = "npy"


class MergeMode(Choice):
    VIRTUAL = "virtual", "no copy of the features"  # HDF5 virtual datasets / npy manifest
    COPY = "copy", "one self-contained output"


class CompileMode(Choice):
    DEFAULT = "default"
    REDUCE_OVERHEAD = "reduce-overhead", "adds CUDA graphs"
    MAX_AUTOTUNE = "max-autotune"


class Compression(Choice):
    GZIP = "gzip"
    LZF = "lzf"


class Precision(Choice):
    """A compute (or weights) dtype; AUTO is chosen for the device (engine/device.py)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype; AUTO has none until resolved for a device."""
        import torch

        if self is Precision.AUTO:
            raise ValueError("Precision.AUTO has no dtype: resolve it for a device first")
        return getattr(torch, _TORCH_NAMES[self.value])

    @classmethod
    def of(cls, dtype: torch.dtype) -> Precision:
        """The member whose torch dtype is `dtype`."""
        return next(p for p in cls if p is not cls.AUTO and p.torch == dtype)


_TORCH_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class FitMode(Choice):
    """How `viz` fits its colour maps."""

    PER_IMAGE = "per-image", "each picture uses its full colour range"
    JOINT = "joint", "one fit on a sample across the file, comparable across pictures"
