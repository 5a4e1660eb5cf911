"""Checkpoint load time against a plain sequential read of the same file.

Writes a random-weight checkpoint with the tests' helper (0.4b by default, 1.6 GB in
float32), then times, each in a fresh process and with the file already in the page
cache: a raw read of the file in 16 MiB chunks; `load_backbone` to float32 (zero copy:
the weights map the file, so "touched" also faults in every page, as the first forward
does) and to bfloat16; and the naive way (build the model, `load_file`,
`load_state_dict`). The methods take turns within each repeat, so a change in the load
of a shared machine hits them alike; the fastest run of each is its cost with the least
interference, the median what a run typically sees; CPU seconds (all threads, user +
system) depend least on other jobs. Peak anonymous memory (RssAnon,
sampled every 5 ms) is reported beside each, since pages of the mapped file are
reclaimable cache, not a copy.

`--layout both` (the default) also times the same weights in transformers' layout (a
save_pretrained folder under transformers' own names, `ffn.w12` split in two: the
layout that costs the most to read, as the halves are joined into a copy), written from
the file with the project's name table; `--layout upstream` times the original file only.

    python scripts/bench_load.py --arch 0.4b --repeats 3 [--layout both] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK = 16 << 20


def _rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(method: str, path: str) -> dict:
    """Runs in a child process: time one load and sample its peak anonymous memory."""
    import torch
    from safetensors.torch import load_file

    from sapiens2_cli import build_backbone, inspect_checkpoint, load_backbone

    peak, done = [_rss_anon_mib()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(_rss_anon_mib())
            time.sleep(0.005)

    base = peak[0]
    threading.Thread(target=sample, daemon=True).start()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if method == "raw_read":
        buffer = bytearray(CHUNK)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    elif method.removeprefix("transformers_").startswith("load_backbone"):
        dtype = torch.bfloat16 if "bf16" in method else torch.float32
        model = load_backbone(path, dtype=dtype)
        if method.endswith("touched"):  # fault in every page of the mapped weights
            for p in model.parameters():
                p.detach().view(-1)[:: 4096 // p.element_size()].sum()
    elif method == "naive":
        model = build_backbone(inspect_checkpoint(path).config)
        model.load_state_dict(load_file(path))
    seconds = time.perf_counter() - start
    done.set()
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime  # all threads
    return {"seconds": seconds, "cpu_s": cpu_s, "peak_anon_mib": max(peak) - base}


def _write_transformers(path: Path, folder: Path) -> Path:
    """The checkpoint at `path` as a save_pretrained folder under transformers' names."""
    import torch
    from safetensors.torch import load_file, save_file

    from sapiens2_cli import inspect_checkpoint
    from sapiens2_cli.model.transformers_format import transformers_names

    config = inspect_checkpoint(path).config
    state = {}
    for name, tensor in load_file(path).items():
        names = transformers_names(name)
        for new, part in zip(names, torch.chunk(tensor, len(names)) if names else (), strict=True):
            state[new] = part.contiguous()
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    fields = {
        "model_type": "sapiens2",
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn_dim,
        "num_key_value_heads_per_layer": list(config.block_kv_heads()),
    }
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="0.4b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="time this file instead of writing one")
    parser.add_argument("--layout", choices=["both", "upstream"], default="both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(*args.child)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "random.safetensors"
        if not args.checkpoint:
            sys.path.insert(0, str(REPO / "tests"))
            from checkpoints import write_random_checkpoint

            from sapiens2_cli import get_config

            print(f"writing a random {args.arch} checkpoint ...", file=sys.stderr)
            write_random_checkpoint(path, get_config(args.arch))
        size_gb = path.stat().st_size / 1e9
        methods = [
            "raw_read",
            "load_backbone_fp32",
            "load_backbone_fp32_touched",
            "load_backbone_bf16",
            "naive",
        ]
        paths = dict.fromkeys(methods, path)
        if args.layout == "both":
            print("writing it in transformers' layout ...", file=sys.stderr)
            folder = _write_transformers(path, Path(tmp) / "transformers")
            for method in methods[1:4]:
                paths[f"transformers_{method}"] = folder
            _child("raw_read", folder / "model.safetensors")  # into the page cache too
        runs: dict[str, list[dict]] = {m: [] for m in paths}
        _child("raw_read", path)  # warm the page cache
        for _ in range(args.repeats):
            for method, where in paths.items():
                runs[method].append(_child(method, where))
        raw = statistics.median(r["seconds"] for r in runs["raw_read"])
        raw_min = min(r["seconds"] for r in runs["raw_read"])
        result = {
            "file": str(path) if args.checkpoint else f"random {args.arch} (float32)",
            "size_gb": round(size_gb, 3),
            "repeats": args.repeats,
            "methods": {
                m: {
                    "median_s": round(statistics.median(r["seconds"] for r in rs), 3),
                    "vs_raw_read": round(statistics.median(r["seconds"] for r in rs) / raw, 2),
                    "min_s": round(min(r["seconds"] for r in rs), 3),
                    "min_vs_raw_min": round(min(r["seconds"] for r in rs) / raw_min, 2),
                    "median_cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 3),
                    "peak_anon_gib": round(max(r["peak_anon_mib"] for r in rs) / 1024, 2),
                }
                for m, rs in runs.items()
            },
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['file']}: {size_gb:.2f} GB, median of {args.repeats}, page cache warm")
    for method, figures in result["methods"].items():
        print(
            f"  {method:40s} median {figures['median_s']:6.3f} s {figures['vs_raw_read']:5.2f}x raw"
            f"  min {figures['min_s']:6.3f} s {figures['min_vs_raw_min']:5.2f}x raw"
            f"  cpu {figures['median_cpu_s']:6.3f} s  peak anon {figures['peak_anon_gib']:.2f} GiB"
        )


def _child(method: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


if __name__ == "__main__":
    main()
