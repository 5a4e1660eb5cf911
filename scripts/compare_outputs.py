"""Proof that a refactor changed no behaviour: run the same `sapiens2` commands from two
source trees on the same inputs and compare everything they write.

    python scripts/compare_outputs.py BEFORE_TREE [AFTER_TREE] [--work DIR] [--keep] [--json]

AFTER_TREE defaults to the repository this script lives in. Each tree runs as
`python -m sapiens2_cli ...` with cwd and PYTHONPATH set to it (checked: the package
imported is that tree's, not an installed copy), on CPU, `--precision fp32`, one thread,
private caches and no hub. Both trees write to the same absolute output folder in turn (it
is moved aside after each), so paths recorded in outputs are the same.

Compared: HDF5 files object by object (every group, dataset and attribute: dtype, shape,
storage properties, bytes, values; not the file's bytes, which hold library internals),
`manifest.json` as parsed JSON, .safetensors files by parsed header and tensor bytes (their
metadata's key order changes from run to run), every other file (npy shards, PNGs, failure
logs) by bytes, the set of files in each command's folder, and the commands' `--json`
stdout. Only the fields in the IGNORED_* tables are skipped: those differ between two runs
of one tree. Prints one line per command and a summary; exits 1 if anything differs.

The script must not import sapiens2_cli: the package's modules move in refactors, the
command line is what must not change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_commands import MODEL, Command, make_commands
from compare_inputs import ROOT, make_inputs, url_skip_reason
from output_diff import (
    IGNORED_H5_ATTRIBUTES,
    IGNORED_MANIFEST_KEYS,
    IGNORED_STDOUT_KEYS,
    Comparison,
    compare_paths,
    compare_stdout,
)

sys.path.insert(0, str(ROOT / "tests"))  # the tests' HTTP server with ranges (no sapiens2_cli)
from s3_server import http_server

STEP_TIMEOUT_S = 300  # one step takes a few seconds; a hung one must not hang the proof


@dataclasses.dataclass
class Side:
    """One tree's run of one command: each step's stdout, an error, in-tree check results."""

    stdouts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    error: str | None = None
    checks: list[str] = dataclasses.field(default_factory=list)


def tree_env(tree: Path, private: Path) -> dict[str, str]:
    """The environment a tree runs in: its own package first, one thread, caches of its
    own, the hub offline, CPU only, nothing from this shell that changes the tool."""
    dropped = ("SAPIENS2_", "PYTHON", "HF_", "HUGGINGFACE", "XDG_", "CUDA_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        PYTHONPATH=str(tree),
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        XDG_CACHE_HOME=str(private / "cache"),
        HF_HOME=str(private / "hf"),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        CUDA_VISIBLE_DEVICES="",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def check_import(tree: Path, env: dict[str, str]) -> None:
    """Stop unless `python -m sapiens2_cli` in this env runs this tree's code (an editable
    install of another checkout must not win)."""
    code = "import sapiens2_cli; print(sapiens2_cli.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    path = Path(found.stdout.strip()).resolve() if found.returncode == 0 else None
    if path is None or not path.is_relative_to(tree.resolve()):
        raise SystemExit(f"error: in {tree} sapiens2_cli comes from {path or found.stderr}")


def run_tree(tree: Path, side: str, commands: list[Command], work: Path) -> dict[str, Side]:
    """Run every command from `tree` into work/out, then move work/out to work/SIDE."""
    env = tree_env(tree, work / "env" / side)
    check_import(tree, env)
    out = work / "out"
    out.mkdir()
    results = {}
    for command in commands:
        folder = out / command.name
        folder.mkdir()
        results[command.name] = result = Side()
        for i, step in enumerate(command.steps):
            if step.kind == "snapshot":
                source, copy = (folder / name for name in step.argv)
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
            elif step.kind == "unchanged":
                now, then = step.argv
                check = compare_paths(folder / then, folder / now, now)
                result.checks += [f"the rerun changed {d}" for d in check.differences]
            else:
                label = f"step {i + 1} ({step.argv[0]})"
                try:
                    done = subprocess.run(
                        [sys.executable, "-m", "sapiens2_cli", *step.argv],
                        cwd=tree,
                        env=env,
                        input=step.stdin.read_bytes() if step.stdin else b"",
                        capture_output=True,
                        timeout=STEP_TIMEOUT_S,
                    )
                except subprocess.TimeoutExpired:
                    result.error = f"{label} still running after {STEP_TIMEOUT_S} s"
                    break
                stdout = done.stdout.decode(errors="backslashreplace")
                result.stdouts.append((label, stdout))
                if done.returncode != 0:
                    stderr = done.stderr.decode(errors="backslashreplace").strip()
                    tail = stderr.splitlines()[-1:] or ["(no stderr)"]
                    result.error = f"{label} exit {done.returncode}: {tail[0]}"
                    break
    out.rename(work / side)
    return results


def compare_command(command: Command, work: Path, before: Side, after: Side) -> Comparison:
    result = Comparison()
    for side, run in (("before", before), ("after", after)):
        if run.error:
            result.differ(side, run.error)
        for check in run.checks:
            result.differ(side, check)
    for (label, a), (_, b) in zip(before.stdouts, after.stdouts, strict=False):
        result.extend(compare_stdout(a, b, f"{label} stdout"))
    result.extend(compare_paths(work / "before" / command.name, work / "after" / command.name))
    return result


def make_projection(tree: Path, inputs: Path, private: Path) -> None:
    """inputs/proj.safetensors for the --project commands, by BEFORE's `sapiens2 pca`, made
    once: two pca runs never write the same bytes (the metadata order varies), and the
    file's sha256 is recorded in every output projected with it."""
    env = tree_env(tree, private)
    fit = inputs / "pca-fit.h5"
    for argv in (
        [
            "extract",
            str(inputs / "photos"),
            "-o",
            str(fit),
            *MODEL.format(**{"in": inputs}).split(),
        ],
        ["pca", str(fit), "-k", "4", "-o", str(inputs / "proj.safetensors")],
    ):
        command = [sys.executable, "-m", "sapiens2_cli", *argv, "-q"]
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: making the projection: {done.stderr.strip()}")


def describe(tree: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return f"{tree} ({head.stdout.strip() or 'not a git checkout'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the source tree before the change")
    parser.add_argument(
        "after", type=Path, nargs="?", default=ROOT, help="the tree after (default: this one)"
    )
    parser.add_argument("--work", type=Path, help="an empty or new folder to work in")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    before, after = args.before.resolve(), args.after.resolve()
    for tree in (before, after):
        if not (tree / "sapiens2_cli").is_dir():
            parser.error(f"{tree} holds no sapiens2_cli package")
    if args.work is not None:
        if args.work.exists() and any(args.work.iterdir()):
            parser.error(f"--work {args.work} is not empty")
        args.work.mkdir(parents=True, exist_ok=True)
        work = args.work.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="compare-outputs-"))
    log = functools.partial(print, file=sys.stderr, flush=True)
    log(f"before: {describe(before)}\nafter:  {describe(after)}\nwork:   {work}")
    skipped = url_skip_reason()
    try:
        with contextlib.ExitStack() as stack:
            (work / "inputs").mkdir()
            url = None if skipped else stack.enter_context(http_server(str(work / "inputs")))
            make_inputs(work / "inputs", [after, before], url)
            make_projection(before, work / "inputs", work / "env" / "inputs")
            commands = make_commands(work / "inputs", work / "out", url)
            runs, seconds = {}, {}
            for side, tree in (("before", before), ("after", after)):
                start = time.monotonic()
                runs[side] = run_tree(tree, side, commands, work)
                seconds[side] = round(time.monotonic() - start, 1)
                log(f"{side}: {len(commands)} commands in {seconds[side]} s")
        report = []
        for command in commands:
            result = compare_command(
                command, work, runs["before"][command.name], runs["after"][command.name]
            )
            report.append((command, result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    differ = sum(not result.same for _, result in report)
    summary = f"{len(report)} commands: {len(report) - differ} same, {differ} differ"
    if args.json:
        print(
            json.dumps(
                {
                    "before": str(before),
                    "after": str(after),
                    "seconds": seconds,
                    "skipped": [skipped] if skipped else [],
                    "ignored_fields": {
                        "stdout": IGNORED_STDOUT_KEYS,
                        "h5_attributes": IGNORED_H5_ATTRIBUTES,
                        "manifest": IGNORED_MANIFEST_KEYS,
                    },
                    "commands": [
                        {
                            "name": command.name,
                            "steps": [[s.kind, *s.argv] for s in command.steps],
                            "same": result.same,
                            "differences": result.differences,
                            "ignored": sorted(result.ignored),
                        }
                        for command, result in report
                    ],
                    "summary": summary,
                    "work": str(work) if args.keep else None,
                },
                indent=1,
            )
        )
    else:
        width = max(len(command.name) for command, _ in report)
        for command, result in report:
            if result.same:
                print(f"{command.name:<{width}}  same")
            else:
                more = len(result.differences) - 1
                extra = f" (and {more} more)" if more else ""
                print(f"{command.name:<{width}}  differ: {result.differences[0]}{extra}")
        if skipped:
            print(skipped)
        ignored = sorted({i.rpartition(": ")[2] for _, r in report for i in r.ignored})
        reasons = {**IGNORED_STDOUT_KEYS, **IGNORED_H5_ATTRIBUTES, **IGNORED_MANIFEST_KEYS}
        for name in ignored:
            print(f"ignored {name}: {reasons.get(name.rpartition('@')[2], '')}")
        print(summary)
    if args.keep:
        log(f"outputs kept in {work}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
