"""The tool against a quick-start-style loop around the backbone, same images, same process.

The loop is what a user writes around the upstream module (written here from
docs/model.md, not from upstream code): for each image, on the main thread, decode
with PIL, convert to RGB, resize to H x W (PIL's bicubic), normalize with the spec's
mean/std, run a float32 module at batch 1 and take the patch tokens of the last layer to
numpy. The features are dropped, not written: the loop pays no disk time, so the ratio is
in its favour. The module is our `load_backbone` used as a plain nn.Module.

The tool is the real extract pipeline (`bench.pipeline.time_extract`) with
the settings given here, into a temporary HDF5 file in float16. Its images/s includes
the model load (and the compile warm-up); the loop's excludes the load and one
warm-up image. Both use the same checkpoint: `--checkpoint`, or random weights of
`--arch` saved to a temporary file.

    python scripts/bench_upstream_style.py IMAGES --arch 0.1b --size 256x192 \\
        --batch-size 8 --device cpu [--limit N] [--json]
    python scripts/bench_upstream_style.py IMAGES --arch 1b --batch-size auto \\
        --precision bf16 --weights-dtype bf16 --workers 12 --json          # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sapiens2_cli.bench import environment
from sapiens2_cli.bench.pipeline import random_checkpoint, time_extract
from sapiens2_cli.config.choices import Precision
from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.config.values import parse_batch_size, parse_size
from sapiens2_cli.engine.device import resolve_device, resolve_precision
from sapiens2_cli.inputs.sources import list_images
from sapiens2_cli.model import get_config, inspect_checkpoint, load_backbone, normalize_pixels


def upstream_style_loop(
    images: list[str], checkpoint: Path, size: tuple[int, int], device: torch.device
) -> dict:
    """Time the quick-start loop over `images`; returns images/s and the seconds."""
    model = load_backbone(checkpoint, device=device, dtype=torch.float32)
    height, width = size

    def one(path: str) -> np.ndarray:
        rgb = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].to(device)
        with torch.inference_mode():
            tokens = model(normalize_pixels(pixels))  # (1, 9 + h*w, D)
        return tokens[0, model.config.num_prefix_tokens :].cpu().numpy()

    one(images[0])  # warm-up, untimed
    start = time.perf_counter()
    for path in images:
        one(path)
    seconds = time.perf_counter() - start
    return {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of images (walked recursively)")
    parser.add_argument("--arch", default="1b", help="random weights of this arch")
    parser.add_argument("--checkpoint", type=Path, help="real weights instead (.safetensors)")
    parser.add_argument("--size", help="HxW (default: the arch's training size)")
    parser.add_argument("--batch-size", default="8", help="the tool's batch size, or auto")
    parser.add_argument(
        "--workers", type=int, help="the tool's decode processes (default: extract's)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="the tool's compute precision")
    parser.add_argument("--weights-dtype", default="fp32", help="the tool's: fp32 or bf16/fp16")
    parser.add_argument("--compile", default=None, help="the tool's torch.compile mode")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(Precision.parse(args.precision, "--precision"), device)
    weights = Precision.parse(args.weights_dtype, "--weights-dtype")
    weights_dtype = resolve_precision(weights, device)
    images = list_images([str(args.folder)])[: args.limit]
    config = (
        inspect_checkpoint(args.checkpoint).config if args.checkpoint else get_config(args.arch)
    )
    size = parse_size(args.size) if args.size else config.image_size
    batch = parse_batch_size(args.batch_size)
    options = ExtractOptions(
        checkpoint=args.checkpoint,
        size=size,
        device=str(device),
        precision=precision,
        weights_dtype=weights_dtype,
        batch_size=batch,
        workers=args.workers,
        compile=args.compile is not None,
        compile_mode=args.compile,
    )
    with contextlib.ExitStack() as stack:
        checkpoint = args.checkpoint or stack.enter_context(random_checkpoint(config))
        print(f"tool: extract pipeline on {len(images)} images", file=sys.stderr)
        tool = time_extract(images, replace(options, checkpoint=checkpoint)).as_dict()
        print("upstream-style loop: PIL on the main thread, batch 1, fp32", file=sys.stderr)
        loop = upstream_style_loop(images, checkpoint, size, device)
    report = {
        "arch": config.name,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "random weights",
        "image_size": list(size),
        "tool": tool | {"precision": precision.value, "weights_dtype": weights_dtype.value},
        "upstream_style": loop | {"precision": "fp32", "batch_size": 1},
        "ratio": tool["images_per_s"] / loop["images_per_s"],
        "steady_ratio": tool["steady_images_per_s"] / loop["images_per_s"],
        "environment": environment(device),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"tool           {tool['images_per_s']:8.2f} images/s ({tool['images']} images, "
        f"{tool['seconds']:.1f} s, load {tool['load_s']:.1f} s, batch {tool['batch_size']})\n"
        f"upstream-style {loop['images_per_s']:8.2f} images/s ({loop['images']} images, "
        f"{loop['seconds']:.1f} s)\n"
        f"ratio          {report['ratio']:8.2f}x (steady, load and compile out: "
        f"{report['steady_ratio']:.2f}x)"
    )


if __name__ == "__main__":
    main()
