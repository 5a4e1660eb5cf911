"""The fixed set of `sapiens2` commands `compare_outputs.py` runs from both trees: every
input kind, both formats, each reduction, merge, resume, info and viz."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compare_inputs import SIZE

#: Flags every extract step gets unless it names --checkpoint itself (a resume that takes
#: the other settings from OUT).
MODEL = f"--checkpoint {{in}}/tiny.safetensors --size {SIZE} --precision fp32 --device cpu"

#: The commands, run in this order by both trees, each in its own folder {here} under the
#: run's output folder {out} (the same path for both trees); {in} is the inputs, {url} the
#: HTTP server's address. A step is split on spaces before the names are filled in. Extract
#: steps get MODEL, --json and -q; `< FILE` feeds stdin; `snapshot A B` copies A to B in
#: {here}; `unchanged A B` fails the command if A no longer equals B (in the same tree).
COMMANDS: list[tuple[str, list[str]]] = [
    ("plain-h5", ["extract {in}/photos -o {here}/f.h5"]),
    ("plain-npy", ["extract {in}/photos -o {here}/f --rows-per-shard 2 --batch-size 3"]),
    ("map-layers-h5", ["extract {in}/photos -o {here}/f.h5 --layout map --layers 0,-1"]),
    ("map-layers-npy", ["extract {in}/photos -o {here}/f --layout map --layers 0,-1"]),
    ("tokens-all-h5", ["extract {in}/photos -o {here}/f.h5 --tokens all"]),
    ("tokens-all-npy", ["extract {in}/photos -o {here}/f --tokens all"]),
    ("tokens-cls-h5", ["extract {in}/photos -o {here}/f.h5 --tokens cls"]),
    ("tokens-cls-npy", ["extract {in}/photos -o {here}/f --tokens cls"]),
    ("tokens-mean-h5", ["extract {in}/photos -o {here}/f.h5 --tokens mean"]),
    ("letterbox-h5", ["extract {in}/photos -o {here}/f.h5 --resize letterbox --dtype float32"]),
    ("letterbox-npy", ["extract {in}/photos -o {here}/f --resize letterbox --dtype float32"]),
    ("pool-h5", ["extract {in}/photos -o {here}/f.h5 --pool 2"]),
    ("pool-npy", ["extract {in}/photos -o {here}/f --pool 2 --tokens all"]),
    ("pool-map-h5", ["extract {in}/photos -o {here}/f.h5 --pool 2 --layout map"]),
    ("int8-h5", ["extract {in}/photos -o {here}/f.h5 --dtype int8"]),
    ("int8-npy", ["extract {in}/photos -o {here}/f --dtype int8"]),
    ("int8-map-h5", ["extract {in}/photos -o {here}/f.h5 --dtype int8 --layout map"]),
    ("pca-h5", ["pca {out}/plain-h5/f.h5 -k 4 -o {here}/proj.safetensors --json"]),
    ("pca-npy", ["pca {out}/plain-npy/f -k 4 --rows 3 -o {here}/proj.safetensors --json"]),
    ("project-h5", ["extract {in}/photos -o {here}/f.h5 --project {in}/proj.safetensors"]),
    ("project-npy", ["extract {in}/photos -o {here}/f --project {in}/proj.safetensors"]),
    (
        "project-map-h5",
        ["extract {in}/photos -o {here}/f.h5 --layout map --project {in}/proj.safetensors"],
    ),
    (
        "pool-project-int8-h5",
        [
            "extract {in}/photos -o {here}/f.h5 --pool 2 --dtype int8"
            " --project {in}/proj.safetensors"
        ],
    ),
    (
        "pool-project-int8-npy",
        ["extract {in}/photos -o {here}/f --pool 2 --dtype int8 --project {in}/proj.safetensors"],
    ),
    ("tar-h5", ["extract {in}/shards/a.tar -o {here}/f.h5"]),
    ("tar-gz-npy", ["extract {in}/shards/b.tar.gz -o {here}/f"]),
    ("video-fps2-h5", ["extract {in}/clip.mp4 -o {here}/f.h5 --fps 2"]),
    ("video-every-frame-npy", ["extract {in}/clip.mp4 -o {here}/f --every-frame"]),
    ("parquet-h5", ["extract {in}/table.parquet -o {here}/f.h5"]),
    ("parquet-key-npy", ["extract {in}/table.parquet -o {here}/f --key-column id"]),
    (
        "mixed-npy",
        ["extract {in}/photos {in}/shards {in}/clip.mp4 {in}/table.parquet -o {here}/f"],
    ),
    ("files-from-h5", ["extract --files-from {in}/list.txt -o {here}/f.h5"]),
    ("stdin-npy", ["extract - -o {here}/f < {in}/stdin.txt"]),
    ("boxes-h5", ["extract {in}/photos --boxes {in}/coco.json -o {here}/f.h5"]),
    ("boxes-npy", ["extract {in}/photos --boxes {in}/coco.json -o {here}/f"]),
    (
        "url-h5",
        [
            "extract {url}/photos/astronaut.png {url}/photos/broken.jpg {url}/shards/a.tar"
            " {url}/table.parquet --files-from {in}/urls.txt -o {here}/f.h5"
        ],
    ),
    (
        "shard-merge-h5",
        [
            "extract {in}/photos -o {here}/f.h5 --shard 0/2",
            "extract {in}/photos -o {here}/f.h5 --shard 1/2",
            "merge -o {here}/f.h5 --json",
        ],
    ),
    (
        "shard-merge-npy",
        [
            "extract {in}/photos -o {here}/f --shard 0/2",
            "extract {in}/photos -o {here}/f --shard 1/2",
            "merge -o {here}/f --json",
        ],
    ),
    ("merge-copy-h5", ["merge {out}/shard-merge-h5/f.h5.parts -o {here}/f.h5 --merge copy --json"]),
    ("merge-copy-npy", ["merge {out}/shard-merge-npy/f.parts -o {here}/f --merge copy --json"]),
    (
        "resume-h5",
        [
            "extract {in}/photos -o {here}/f.h5",
            "snapshot f.h5 first.h5",
            "extract {in}/photos -o {here}/f.h5",
            "unchanged f.h5 first.h5",
        ],
    ),
    (
        "resume-npy",
        [
            "extract {in}/photos -o {here}/f",
            "snapshot f first",
            "extract {in}/photos -o {here}/f",
            "unchanged f first",
        ],
    ),
    (
        "resume-grow-h5",
        [
            "extract {in}/photos/astronaut.png -o {here}/f.h5 --dtype int8 --layers 3,-1",
            "extract {in}/photos -o {here}/f.h5 --checkpoint {in}/tiny.safetensors",
        ],
    ),
    (
        "resume-grow-npy",
        [
            "extract {in}/photos/astronaut.png -o {here}/f --pool 2",
            "extract {in}/photos -o {here}/f --checkpoint {in}/tiny.safetensors",
        ],
    ),
    (
        "info",
        [
            f"info {{out}}/{output} --json"
            for output in (
                "plain-h5/f.h5",
                "plain-npy/f",
                "pool-project-int8-h5/f.h5",
                "pool-project-int8-npy/f",
                "shard-merge-h5/f.h5",
                "shard-merge-npy/f",
                "video-fps2-h5/f.h5",
                "boxes-npy/f",
            )
        ],
    ),
    ("viz-h5", ["viz {out}/plain-h5/f.h5 -o {here}/v --grid --overlay --long-side 48 --json"]),
    (
        "viz-options",
        [
            "viz {out}/map-layers-npy/f -o {here}/joint --fit joint --layer 0 --grid"
            " --long-side 48 --json",
            "viz {out}/letterbox-h5/f.h5 -o {here}/grey --components 1"
            " --foreground-threshold 0.5 --long-side 48 --json",
        ],
    ),
    (
        "viz-inputs",
        [
            f"viz {{out}}/{output} -o {{here}}/{output.partition('/')[0]} --overlay --images 3"
            " --long-side 48 --json"
            for output in (
                "video-fps2-h5/f.h5",
                "tar-gz-npy/f",
                "parquet-h5/f.h5",
                "boxes-h5/f.h5",
                "pool-h5/f.h5",
            )
        ],
    ),
]


@dataclasses.dataclass
class Step:
    """One step of a command: `python -m sapiens2_cli ARGV` (its stdout is compared), or
    `snapshot` / `unchanged` (argv: the two names in the command's folder)."""

    kind: str
    argv: list[str]
    stdin: Path | None = None


@dataclasses.dataclass
class Command:
    name: str
    steps: list[Step]


def make_commands(inputs: Path, out: Path, url: str | None) -> list[Command]:
    """COMMANDS with the names filled in (without those needing {url} when it is None)."""
    commands = []
    for name, templates in COMMANDS:
        if url is None and any("{url}" in t for t in templates):
            continue
        names = {"in": inputs, "out": out, "here": out / name, "url": url}
        steps = []
        for template in templates:
            words = template.split()
            if words[0] == "extract" and "--checkpoint" not in words:
                words += MODEL.split()
            if words[0] == "extract":
                words += ["--json", "-q"]
            words = [word.format(**names) for word in words]
            stdin = None
            if "<" in words:
                at = words.index("<")
                stdin, words = Path(words[at + 1]), words[:at] + words[at + 2 :]
            kind = words[0] if words[0] in ("snapshot", "unchanged") else "run"
            steps.append(Step(kind, words[1:] if kind != "run" else words, stdin))
        commands.append(Command(name, steps))
    return commands
