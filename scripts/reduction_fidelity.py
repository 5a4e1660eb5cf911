"""Bytes per image and fidelity of each reduction (float16, int8, pool, PCA and their
combinations) against float32 features, for docs/performance.md.

The model runs once per image through the real `extract` (float32 compute and storage,
`--tokens patch`, the last layer): that is the reference. PCA is fitted on it with the
real `sapiens2 pca` code (`reduce.pca.fit`). Each option then goes through extract's own
device stage on those float32 tokens (`pool_patches`, the projection, the storage
cast or int8 quantization, engine/forward.py): the same steps, in the same order, that a
run with the option takes after the model, so one forward pass serves every row of the
table. Fidelity compares what a reader gets back (`read` for int8, `reconstruct` for PCA:
back to D) with the float32 reference, on the same (pooled, for pool) grid: relative error
||x - x'|| / ||x|| and cosine, per token, averaged. Without --checkpoint the weights are
random (the arch's, saved to a temporary file), which says nothing of trained features.

    python scripts/reduction_fidelity.py tests/data --arch 1b --size 1024x768 -k 256 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sapiens2_cli.bench.pipeline import random_checkpoint
from sapiens2_cli.config.choices import Layout, StorageDtype, TokenMode
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.config.values import parse_size
from sapiens2_cli.model import get_config
from sapiens2_cli.output import open_features
from sapiens2_cli.reduce.apply_projection import DeviceProjection, project
from sapiens2_cli.reduce.cast import to_storage
from sapiens2_cli.reduce.losses import dequantize
from sapiens2_cli.reduce.pca import fit
from sapiens2_cli.reduce.pool import pool_patches
from sapiens2_cli.scaleout.launch import extract

#: (name, pool K, project, storage dtype), in the table's order.
OPTIONS = [
    ("float32", 1, False, StorageDtype.FLOAT32),
    ("float16", 1, False, StorageDtype.FLOAT16),
    ("int8", 1, False, StorageDtype.INT8),
    ("pool 2", 2, False, StorageDtype.FLOAT16),
    ("PCA {k}", 1, True, StorageDtype.FLOAT16),
    ("PCA {k} + int8", 1, True, StorageDtype.INT8),
    ("pool 2 + PCA {k} + int8", 2, True, StorageDtype.INT8),
]


def reference(inputs: list[str], checkpoint: Path, size: tuple[int, int], out: Path) -> None:
    """The float32 rows of every input, by the real extract."""
    options = ExtractOptions(
        checkpoint=checkpoint, size=size, dtype="float32", precision="fp32", workers=0
    )
    extract(inputs, out, options)


def row(x: torch.Tensor, pool: int, projection, dtype: StorageDtype, grid) -> dict:
    """One option applied to float32 rows x as extract's device stage applies it; the
    bytes per row stored and the values a reader gets back (in D)."""
    kept = pool_patches(x, TokenMode.PATCH, Layout.TOKENS, grid, pool)
    device = projection and DeviceProjection(projection, Layout.TOKENS, torch.device("cpu"))
    y, _ = project(kept, device)
    stored = to_storage(y, dtype)
    if stored.scales is None:
        values = stored.features.float()
    else:  # as the reader gives int8 back: q x scale
        values = torch.from_numpy(
            dequantize(stored.features.numpy(), stored.scales.numpy(), Layout.TOKENS)
        )
    if projection is not None:
        values = torch.from_numpy(projection.reconstruct(values.numpy()))
    nbytes = stored.features[0].nbytes + (0 if stored.scales is None else stored.scales[0].nbytes)
    return {"kept": kept.double(), "values": values.double(), "bytes": nbytes}


def fidelity(want: torch.Tensor, got: torch.Tensor) -> dict:
    """Per-token relative error and cosine, averaged (and the worst), over every token."""
    error = (want - got).norm(dim=-1) / want.norm(dim=-1)
    cosine = torch.nn.functional.cosine_similarity(want, got, dim=-1)
    return {
        "relative_error_mean": float(error.mean()),
        "relative_error_max": float(error.max()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
    }


def table(inputs: list[str], checkpoint: Path, size: tuple[int, int], k: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sapiens2-fidelity-") as tmp:
        out = Path(tmp) / "float32.h5"
        reference(inputs, checkpoint, size, out)
        with open_features(out) as rows:
            projection = fit(rows, k)
        with open_features(out) as f:
            x = torch.from_numpy(f.read(slice(None)))  # (n, 1, h*w, D) float32
            grid, settings = tuple(f.settings["grid_size"]), dict(f.settings)
    rows = []
    for name, pool, projected, dtype in OPTIONS:
        r = row(x, pool, projection if projected else None, dtype, grid)
        errors = fidelity(r["kept"], r["values"])
        rows.append({"option": name.format(k=k), "bytes_per_image": r["bytes"], **errors})
    float16 = rows[1]["bytes_per_image"]
    for r in rows:
        r["smaller_than_float16"] = float16 / r["bytes_per_image"]
    return {
        "arch": settings["arch"],
        "image_size": list(size),
        "grid": list(grid),
        "embed_dim": settings["embed_dim"],
        "images": len(x),
        "k": k,
        "pca_variance_kept_fit": projection.variance_kept,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--arch", default="1b", help="random weights of this zoo arch")
    parser.add_argument("--checkpoint", type=Path, help="a .safetensors file instead")
    parser.add_argument("--size", default="1024x768", help="HxW")
    parser.add_argument("-k", type=int, default=256, help="PCA components")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    if args.checkpoint:
        report = table(args.inputs, args.checkpoint, size, args.k)
    else:
        with random_checkpoint(get_config(args.arch)) as checkpoint:
            report = table(args.inputs, checkpoint, size, args.k)
    if args.json:
        print(json.dumps(report))
        return
    print(f"{report['arch']} at {args.size}, {report['images']} images, grid {report['grid']}")
    print(f"{'option':<24}{'bytes/image':>14}{'x smaller':>10}{'rel. error':>12}{'cosine':>10}")
    for r in report["rows"]:
        print(f"{r['option']:<24}{r['bytes_per_image']:>14,}{r['smaller_than_float16']:>10.1f}"
              f"{r['relative_error_mean']:>12.2e}{r['cosine_mean']:>10.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
