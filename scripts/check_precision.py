"""bf16 autocast against fp32 on the CPU: per-image cosine of the patch features, and speed.

What `--precision auto` picks on a CPU with native bf16 (AMX or AVX-512 BF16) is bf16
autocast with bf16 weights (`--weights-dtype auto`); this runs that, bf16 autocast over
float32 weights, and plain fp32 on the same photos in one process, so the cosines and the
timings are comparable. Checkpoints: the tests' tiny golden weights and a random-weight
zoo checkpoint written with the tests' helper. Batch 1, last block's patch tokens.

    python scripts/check_precision.py tests/data --arch 0.1b --size 256x192 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sapiens2_cli.bench.timing import environment
from sapiens2_cli.engine.device import autocast
from sapiens2_cli.inputs.decode import decode_image
from sapiens2_cli.model import get_config, load_backbone, normalize_pixels

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "golden" / "tiny_weights.safetensors"
#: (name, compute dtype, weights dtype)
MODES = [
    ("fp32", torch.float32, torch.float32),
    ("bf16 autocast, fp32 weights", torch.bfloat16, torch.float32),
    ("bf16 autocast, bf16 weights (auto)", torch.bfloat16, torch.bfloat16),
]


def run(
    checkpoint: Path, images: list[Path], size: tuple[int, int], repeats: int
) -> dict[str, dict]:
    """Per mode: the patch features of each image and the median ms per image."""
    pixels = [
        normalize_pixels(
            torch.from_numpy(decode_image(str(p), size).pixels.copy()).permute(2, 0, 1)[None]
        )
        for p in images
    ]
    results = {}
    for name, compute, weights in MODES:
        model = load_backbone(checkpoint, dtype=weights)
        prefix = model.config.num_prefix_tokens
        times, feats = [], []
        with torch.inference_mode(), autocast(torch.device("cpu"), compute):
            model(pixels[0])  # warm-up
            for r in range(repeats):
                for x in pixels:
                    start = time.perf_counter()
                    out = model(x)[0, prefix:].float()
                    times.append(time.perf_counter() - start)
                    if r == 0:
                        feats.append(out)
        results[name] = {"features": feats, "ms_per_image": 1000 * statistics.median(times)}
    return results


def summarize(results: dict[str, dict]) -> dict[str, dict]:
    reference = results["fp32"]
    summary = {}
    for name, r in results.items():
        cos = [
            F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
            for a, b in zip(r["features"], reference["features"], strict=True)
        ]
        summary[name] = {
            "ms_per_image": round(r["ms_per_image"], 1),
            "speed_vs_fp32": round(reference["ms_per_image"] / r["ms_per_image"], 2),
            "cosine_min": round(min(cos), 6),
            "cosine_mean": round(statistics.fmean(cos), 6),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="a folder of photos (tests/data)")
    parser.add_argument("--arch", default="0.1b", help="zoo size of the random checkpoint")
    parser.add_argument("--size", default="256x192", help="HxW for the random checkpoint")
    parser.add_argument("--tiny-size", default="128x96", help="HxW for the tiny weights")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tiny_size = tuple(int(v) for v in args.tiny_size.lower().split("x"))
    sys.path.insert(0, str(REPO / "tests"))
    from checkpoints import write_random_checkpoint

    report = {"environment": environment(torch.device("cpu")), "images": len(images)}
    report[f"tiny golden weights at {args.tiny_size}"] = summarize(
        run(TINY, images, tiny_size, args.repeats)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_checkpoint(Path(tmp) / "random.safetensors", get_config(args.arch))
        report[f"random {args.arch} at {args.size}"] = summarize(
            run(path, images, size, args.repeats)
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
