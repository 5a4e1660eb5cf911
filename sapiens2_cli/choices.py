"""Every fixed set of choices a flag or an API argument takes, declared once.

Each is a string Enum: members compare equal to their text ("patch" == TokenMode.PATCH),
so they go into settings and files as plain strings, and `parse` turns user text into a
member at the edge (CLI or API) with one error wording for all of them.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from sapiens2_cli.errors import Sapiens2Error

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A string Enum whose `parse` accepts a member or its text, case-insensitively."""

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


class TokenMode(Choice):
    """Which tokens of a block's output a row keeps."""

    PATCH = "patch"  # the h*w patch tokens
    ALL = "all"  # the prefix tokens and the patches
    CLS = "cls"  # the first prefix token
    MEAN = "mean"  # the mean of the patch tokens


class Layout(Choice):
    TOKENS = "tokens"  # (T, D) per layer
    MAP = "map"  # (D, h, w) per layer; patch tokens only


class ResizeMode(Choice):
    STRETCH = "stretch"  # upstream's: to H x W, ignoring the aspect ratio
    LETTERBOX = "letterbox"  # keep the aspect ratio, pad with the mean colour


class StorageDtype(Choice):
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class OutputFormat(Choice):
    H5 = "h5"
    NPY = "npy"


class MergeMode(Choice):
    VIRTUAL = "virtual"  # HDF5 virtual datasets / one npy manifest: no copy of the features
    COPY = "copy"  # one self-contained output


class CompileMode(Choice):
    DEFAULT = "default"
    REDUCE_OVERHEAD = "reduce-overhead"
    MAX_AUTOTUNE = "max-autotune"


class Compression(Choice):
    GZIP = "gzip"
    LZF = "lzf"


class Precision(Choice):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class FitMode(Choice):
    """How `viz` fits its colour maps."""

    PER_IMAGE = "per-image"  # each picture uses its full colour range
    JOINT = "joint"  # one fit over a sample of the file, comparable across pictures
