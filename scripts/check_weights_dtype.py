"""Per-image cosine similarity of features from bf16 weights against float32 weights.

The tolerance held for `--weights-dtype bf16` (the default under `--precision bf16`) is a
cosine similarity >= 0.999 per image, over the kept features of each image, on real
photos. The tests check it with the tiny weights; this checks a real checkpoint, on the
device given, through the same device stage extract uses (engine/forward.py), at batch 1.

    python scripts/check_weights_dtype.py tests/data --arch 1b --device cuda --json
    python scripts/check_weights_dtype.py PHOTOS --checkpoint sapiens2_1b_pretrain.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sapiens2_cli.config.choices import Precision, StorageDtype
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.config.values import parse_size
from sapiens2_cli.engine.device import resolve_device
from sapiens2_cli.engine.forward import DeviceModel
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.inputs.sources import list_images
from sapiens2_cli.model import load_backbone
from sapiens2_cli.weights.resolve import resolve_weights

MIN_COSINE = 0.999


def features(
    checkpoint: Path,
    arch: str | None,
    device: torch.device,
    dtype: torch.dtype,
    images: list[str],
    size: tuple[int, int],
    layers: tuple[int, ...],
) -> list[torch.Tensor]:
    """Kept patch features of each image with the weights loaded in `dtype`."""
    model = load_backbone(checkpoint, arch, device=device, dtype=dtype)
    grid = model.config.grid_size(*size)
    options = ExtractOptions(
        layers=layers, dtype=StorageDtype.FLOAT32, precision=Precision.of(dtype), batch_size=1
    )
    stage = DeviceModel(model, options, device, grid)
    out = []
    for path in images:
        pixels = torch.from_numpy(decode_image(path, size).pixels.copy())[None]
        out.append(torch.from_numpy(stage.submit(pixels).result()[0]))
    del model, stage
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--arch", help="from the hub cache (sapiens2 download --arch ...)")
    parser.add_argument("--checkpoint", help="a local .safetensors file")
    parser.add_argument("--size", help="HxW (default: the checkpoint's training size)")
    parser.add_argument("--layers", default="-1", help="block indices, e.g. -1 or 20,39")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    weights = resolve_weights(args.arch, args.checkpoint)
    device = resolve_device(args.device)
    size = parse_size(args.size) if args.size else weights.info.config.image_size
    layers = tuple(int(i) for i in args.layers.split(","))
    images = list_images(args.inputs)
    run = (weights.path, weights.arch_flag, device)
    want = features(*run, torch.float32, images, size, layers)
    got = features(*run, torch.bfloat16, images, size, layers)
    cosines = {
        path: F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        for path, a, b in zip(images, got, want, strict=True)
    }
    worst = min(cosines.values())
    report = {
        "checkpoint": str(weights.path),
        "arch": weights.arch,
        "image_size": list(size),
        "layers": list(layers),
        "device": str(device),
        "min_cosine": worst,
        "tolerance": MIN_COSINE,
        "within_tolerance": worst >= MIN_COSINE,
        "cosine_per_image": cosines,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for path, c in cosines.items():
            print(f"{c:.6f}  {path}")
        verdict = "within" if worst >= MIN_COSINE else "OUTSIDE"
        print(f"min cosine {worst:.6f}: {verdict} the {MIN_COSINE} tolerance", file=sys.stderr)
    sys.exit(0 if worst >= MIN_COSINE else 1)


if __name__ == "__main__":
    main()
