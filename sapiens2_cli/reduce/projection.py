"""A PCA projection file (`sapiens2 pca -o proj.safetensors`, `extract --project`): what
it holds, how it is checked when read, and the maps to and from its k-wide space.

The file is safetensors (no pickle, readable anywhere): `mean` (D) and `components`
(k x D, orthonormal rows, largest variance first) in float32, `explained_variance` (k) and
`total_variance` (a scalar) in float64, and string metadata saying what it was fitted on.
Its identity is the sha256 of its bytes, which outputs made with it record.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sapiens2_cli.errors import Sapiens2Error

#: The metadata key marking a file as ours.
FORMAT = "sapiens2-pca"
TENSORS = ("mean", "components", "explained_variance", "total_variance")
#: How far components @ components.T may be from the identity (float32 rows).
ORTHONORMAL_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Projection:
    """A fitted projection: x (D) -> (x - mean) @ components.T (k)."""

    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (k, D) float32
    explained_variance: np.ndarray  # (k,) float64
    total_variance: float
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None  # of the file it was read from

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def variance_kept(self) -> float:
        """Share of the fit samples' variance the k components keep."""
        return float(self.explained_variance.sum() / self.total_variance)

    def project(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """D-vectors along `axis` -> k-vectors there, in float32."""
        x = np.moveaxis(np.asarray(x, np.float32), axis, -1)
        return np.moveaxis((x - self.mean) @ self.components.T, -1, axis)

    def reconstruct(self, y: np.ndarray, axis: int = -1) -> np.ndarray:
        """k-vectors along `axis` -> their D-vectors, y @ components + mean, in float32."""
        y = np.moveaxis(np.asarray(y, np.float32), axis, -1)
        return np.moveaxis(y @ self.components + self.mean, -1, axis)

    def save(self, path: Path) -> str:
        """Write the file (via a temporary name, so a reader never sees half of it);
        returns its sha256."""
        from safetensors.numpy import save

        tensors = {
            "mean": np.ascontiguousarray(self.mean, np.float32),
            "components": np.ascontiguousarray(self.components, np.float32),
            "explained_variance": np.asarray(self.explained_variance, np.float64),
            "total_variance": np.asarray([self.total_variance], np.float64),
        }
        data = save(tensors, metadata={"format": FORMAT, **self.metadata})
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return hashlib.sha256(data).hexdigest()


def load_projection(path: str | Path) -> Projection:
    """Read and check a projection file; a file that is not one is one line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Sapiens2Error(f"cannot read the projection {path}: {e.strerror}") from None
    tensors, metadata = _parse(path, data)
    mean, components = tensors["mean"], tensors["components"]
    variance, total = tensors["explained_variance"], tensors["total_variance"].reshape(-1)
    if (
        components.ndim != 2
        or mean.shape != components.shape[1:]
        or variance.shape != components.shape[:1]
        or total.shape != (1,)
    ):
        raise _bad(path, "its tensors' shapes do not agree (mean D, components k x D)")
    if not all(np.isfinite(t).all() for t in tensors.values()):
        raise _bad(path, "it holds inf or NaN")
    gram = components.astype(np.float64) @ components.T.astype(np.float64)
    if np.abs(gram - np.eye(len(components))).max() > ORTHONORMAL_TOLERANCE:
        raise _bad(path, "its components are not orthonormal rows")
    return Projection(
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        explained_variance=variance.astype(np.float64),
        total_variance=float(total[0]),
        metadata=metadata,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def projection_settings(
    path: Path | None, dim: int, output: Path
) -> tuple[Projection | None, dict[str, object]]:
    """`--project path` read and checked against the model's width D, and the settings an
    output made with it records (none without it; k and the loss go in its `pca` reduction)."""
    if path is None:
        return None, {}
    projection = load_projection(path)
    if projection.dim != dim:
        raise Sapiens2Error(
            f"{path} projects {projection.dim}-wide features, but this model's are {dim} wide: "
            "fit a projection on an output of this model"
        )
    return projection, {
        "projection": os.path.relpath(Path(path).resolve(), output.resolve().parent),
        "projection_sha256": projection.sha256,
    }


def recorded_projection(
    output: Path, settings: dict, given: str | Path | None = None
) -> Projection:
    """The projection an output was made with: `given` (a file, or a folder searched for the
    file of the recorded sha256), or the file at the path it records (relative to its
    folder; a join's, to its parts' folder), checked by sha256."""
    sha256 = settings.get("projection_sha256")
    if not sha256:
        raise Sapiens2Error(f"{output} was made without --project: its features are not projected")
    if given is None:
        base = output.parent
        if settings.get("parts"):
            base = base / Path(settings["parts"][0]).parent
        given = base / settings["projection"]
        if not given.exists():
            raise Sapiens2Error(
                f"{output} was made with the projection {given}, which is gone (renamed or "
                f"moved?): pass that file, sha256 {sha256}, or its folder as `projection`"
            )
    elif Path(given).is_dir():
        given = _with_sha256(Path(given), sha256, output)
    projection = load_projection(given)
    if projection.sha256 != sha256:
        raise Sapiens2Error(
            f"{given} is not the projection {output} was made with (sha256 {sha256[:12]}…): "
            "pass that file"
        )
    return projection


def _with_sha256(folder: Path, sha256: str, output: Path) -> Path:
    """The file in `folder` whose bytes have `sha256` (a projection renamed since)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and _file_sha256(path) == sha256:
            return path
    raise Sapiens2Error(
        f"no file in {folder} is the projection {output} was made with (sha256 {sha256}): "
        "pass that file"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse(path: Path, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of safetensors bytes made by `sapiens2 pca`."""
    from safetensors.numpy import load

    try:
        (size,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        tensors = load(data)
    except Exception:
        raise _bad(path, "it is not a safetensors file") from None
    if metadata.get("format") != FORMAT:
        raise _bad(path, "it was not written by `sapiens2 pca`")
    missing = [name for name in TENSORS if name not in tensors]
    if missing:
        raise _bad(path, f"it has no {missing[0]!r} tensor")
    return tensors, metadata


def _bad(path: Path, why: str) -> Sapiens2Error:
    return Sapiens2Error(
        f"{path} is not a usable projection ({why}): make one with `sapiens2 pca OUT -k K -o FILE`"
    )
