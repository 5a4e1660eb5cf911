"""The options of `sapiens2 extract`, each declared once: `ExtractOptions` has one field per
flag, named after it (docs/api.md), declared with `setting(...)` (config/settings.py says
what a declaration holds). The command line's flags (cli/extract.py), the defaults
(`DEFAULTS`), what OUT records and what a resume compares (config/records.py) are all read
from these declarations; the rules between options are config/rules.py's.

Everything here needs no files, weights or torch, and this module imports nothing heavy,
so the CLI can read the declarations while building `--help` and a mistake is reported at
once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

from sapiens2_cli.config import values
from sapiens2_cli.config.choices import (
    CompileMode,
    Compression,
    Engine,
    Layout,
    MergeMode,
    OutputFormat,
    Precision,
    ResizeMode,
    StorageDtype,
    TokenMode,
)
from sapiens2_cli.config.rules import check_options
from sapiens2_cli.config.settings import INPUTS, KEEP, MODEL, OUTPUT, RUNNING, Setting, setting
from sapiens2_cli.config.values import Part


@dataclass(frozen=True)
class ExtractOptions:
    """Every option of `sapiens2 extract` (docs/cli.md), one field per flag, named after it.
    Choices, `size`, `layers`, `batch_size` and `shard` also accept the CLI's text.

    Options marked `from_out` are None until settled: on a resume they take the value OUT
    records, otherwise the declared default; `size` defaults to the checkpoint's training
    size and `arch` to OUT's (or 1b).
    """

    # -- Inputs
    files_from: tuple[Path | str, ...] = setting(
        "A file listing image paths, one a line.",
        INPUTS,
        default=(),
        cli=list[str] | None,
        parse=values.parse_lists,
    )
    null: bool = setting(
        "Paths on stdin and in --files-from end with NUL bytes (find -print0), not newlines.",
        INPUTS,
        default=False,
        flags=("--null", "-0"),
    )
    hidden: bool = setting(
        "Also walk hidden folders and take hidden files (names starting with a dot: "
        ".thumbnails/, macOS ._ files).",
        INPUTS,
        default=False,
    )
    boxes: Path | str | None = setting(  # str: a URL
        "Person boxes (COCO annotations or results JSON, JSONL or CSV path,x,y,w,h[,score]): "
        "one row per box, cropped as upstream's pose pipeline does; INPUT is the folder the "
        "box file's image names are relative to.",
        INPUTS,
        cli=str | None,
    )
    box_padding: float | None = setting(
        "With --boxes: crop size as a factor of the box (default {default:g}).",
        INPUTS,
        default=1.25,  # upstream's `PoseGetBBoxCenterScale(padding=1.25)`
        from_out=True,
        record="the crop's size as a factor of the box",
        resume=True,
        by_source=True,
    )
    min_score: float | None = setting(
        "With --boxes: leave out boxes scored below this (unscored kept).", INPUTS
    )
    include_crowd: bool = setting(
        "With --boxes: keep COCO crowd boxes (iscrowd 1).", INPUTS, default=False
    )
    # Video frames kept per second (0: every frame). One a second keeps distinct poses and
    # scenes of human video (people move on that scale) at 1/25-1/60 of the cost of every
    # frame, and gives a row count anyone can predict (one per second of video).
    fps: float | None = setting(
        "Videos: frames kept per second, by presentation time (default {default:g}, or "
        "OUT's on a resume).",
        INPUTS,
        default=1.0,
        from_out=True,
        record="video frames kept per second of presentation time (0: every frame)",
        record_as="video_fps",
        resume="--fps/--every-frame",  # two flags set it
    )
    every_frame: bool = setting(
        "Videos: keep every frame (instead of --fps).", INPUTS, default=False
    )
    image_column: str | None = setting(
        "Parquet / Arrow inputs: the image column, when several hold images (default: the "
        "binary column, or struct with a binary `bytes` field).",
        INPUTS,
        from_out=True,
        record="Parquet / Arrow inputs' image column",
        resume=True,
        by_source=True,
    )
    key_column: str | None = setting(
        "Parquet / Arrow inputs: key rows by this column's values (unique ids) instead of "
        "FILE#row=N.",
        INPUTS,
        from_out=True,
        record="Parquet / Arrow column whose values are keys",
        resume=True,
        by_source=True,
    )
    # -- Model: a local checkpoint, or an arch from the Hugging Face cache (default 1b)
    arch: str | None = setting(
        "Model size: {archs} (`sapiens2 archs`).",
        MODEL,
        flags=("--arch", "-a"),
        record="zoo name",
        resume=True,
    )
    checkpoint: Path | None = setting(
        "A local .safetensors checkpoint (pretrain or task); its arch is inferred.",
        MODEL,
        flags=("--checkpoint", "-c"),
    )
    size: tuple[int, int] | str | None = setting(  # (H, W) or "HxW"
        "Input size HxW, multiples of 16 (default: the arch's training size).",
        MODEL,
        cli=str | None,
        record="model input size",
        record_as="image_size",
        resume=True,
        parse=values.parse_size,
    )
    resize: ResizeMode | None = setting(
        "How an image is brought to the input size (letterbox records content_box)",
        MODEL,
        default=ResizeMode.STRETCH,
        from_out=True,
        choice=ResizeMode,
        record="`stretch` or `letterbox`",
        resume=True,
    )
    jpeg_draft: bool | None = setting(
        "Decode large JPEGs at a reduced scale (at least twice the input size) before the "
        "resize: faster, slightly different pixels (docs/performance.md); {default:on/off} "
        "by default.",
        MODEL,
        default=False,
        from_out=True,
        flags=("--jpeg-draft/--no-jpeg-draft",),
        record="JPEGs decoded at a reduced scale before the resize",
        resume=True,
    )
    # -- What to keep
    layers: tuple[int, ...] | int | str | None = setting(  # block indices; negative: from the end
        "Block indices to keep, e.g. -1 (the last) or 8,17 (default {default}).",
        KEEP,
        default=(-1,),
        from_out=True,
        cli=str | None,
        record="block indices, non-negative",
        resume=True,
        parse=values.parse_layers,
    )
    tokens: TokenMode | None = setting(
        "Tokens a row keeps",
        KEEP,
        default=TokenMode.PATCH,
        from_out=True,
        choice=TokenMode,
        record="`patch`, `all`, `cls` or `mean`",
        resume=True,
    )
    project: Path | None = setting(  # a projection file from `sapiens2 pca`
        "A `sapiens2 pca` file: store (x - mean) @ components.T, k wide.", KEEP
    )
    layout: Layout | None = setting(
        "Row layout",
        KEEP,
        default=Layout.TOKENS,
        from_out=True,
        choice=Layout,
        record="`tokens` or `map`",
        resume=True,
    )
    dtype: StorageDtype | None = setting(
        "Storage dtype (once)",
        KEEP,
        default=StorageDtype.FLOAT16,
        from_out=True,
        choice=StorageDtype,
        cli=list[StorageDtype] | None,  # given twice is an error, not the last one winning
        record="storage dtype of `features`",
        resume=True,
    )
    pool: int | None = setting(  # K: the mean of each KxK block of patch tokens
        "Keep the mean of each KxK block of patch tokens (K divides the patch grid; --tokens "
        "patch or all): K^2 times fewer patch rows (docs/format.md#reductions).",
        KEEP,
        default=1,  # no pooling
        from_out=True,
        metavar="K",
        record="patch tokens averaged over KxK blocks (1: none)",
        resume=True,
    )
    # -- Output
    format: OutputFormat | None = setting("Default: from OUT's name", OUTPUT, choice=OutputFormat)
    compression: Compression | None = setting(
        "HDF5 only, lossless, slower", OUTPUT, choice=Compression
    )
    rows_per_shard: int | None = setting(
        "npy only: rows per shard file (default: as many as fit in 256 MiB of features, at "
        "most 4,096).",
        OUTPUT,
    )
    overwrite: bool = setting(
        "Replace OUT (only ever a sapiens2 output) instead of resuming it.",
        OUTPUT,
        default=False,
        flags=("--overwrite/--no-overwrite",),
    )
    shard: Part | str | None = setting(
        "I/N: write only part I (from 0) of N, beside OUT, for job arrays; join the parts "
        "with `sapiens2 merge` (docs/scaling.md).",
        OUTPUT,
        cli=str | None,
        parse=values.parse_shard,
    )
    merge: MergeMode = setting(
        "Under torchrun, how rank 0 joins the ranks' parts into OUT",
        OUTPUT,
        default=MergeMode.VIRTUAL,
        choice=MergeMode,
    )
    retry_failed: bool = setting(
        "When resuming, try inputs that failed before again (default) or skip them.",
        OUTPUT,
        default=True,
        flags=("--retry-failed/--skip-failed",),
    )
    unguarded_commits: bool = setting(
        "-o at a store without conditional writes (S3 has them): accept that two runs "
        "writing one prefix at once would lose rows.",
        OUTPUT,
        default=False,
    )
    # -- Running
    batch_size: int | str | None = setting(  # None or "auto": the largest that fits
        "Images per forward pass, or auto: the largest of 256, 128, ... that fits in GPU "
        "memory (1 on CPU).",
        RUNNING,
        default=8,
        cli=str,
        parse=values.parse_batch_size,
    )
    workers: int | None = setting(
        "Decode processes; 0 decodes in the main process (default: 1 on CPU, where the "
        "forward uses every core; all cores but two with a GPU).",
        RUNNING,
    )
    device: str = setting(
        "auto, cpu, cuda or cuda:N (auto: a GPU if there is one).", RUNNING, default="auto"
    )
    precision: Precision = setting(
        "Compute dtype; auto is bf16 autocast on GPUs that support it, fp16 on older GPUs, "
        "and on CPU bf16 with native bf16 (AMX, AVX-512 BF16), else fp32",
        RUNNING,
        default=Precision.AUTO,
        choice=Precision,
        record="how the model ran",
        resume=True,
    )
    weights_dtype: Precision = setting(
        "The dtype the weights are loaded in; auto is bf16 under bf16 precision, else fp32 "
        "(fp32 keeps them float32 under autocast)",
        RUNNING,
        default=Precision.AUTO,
        choice=Precision,
        record="the dtype the weights were loaded in",
        resume=True,
    )
    compile: bool = setting(
        "torch.compile the forward (compile time shown apart; slow start).",
        RUNNING,
        default=False,
    )
    compile_mode: CompileMode | None = setting(
        "With --compile", RUNNING, default=CompileMode.DEFAULT, choice=CompileMode, value=None
    )
    profile: bool = setting("Time each stage and show where the time went.", RUNNING, default=False)
    engine: Engine = setting("What runs the work", RUNNING, default=Engine.LOCAL, choice=Engine)
    ray_address: str | None = setting(
        "With --engine ray: the cluster to join (default: RAY_ADDRESS if set, else a Ray "
        "instance started for the run).",
        RUNNING,
    )

    def __post_init__(self) -> None:
        """Parse choices given as text and check what needs no files or weights."""
        for name, declared in declarations().items():
            value = getattr(self, name)
            if value is not None and declared.choice is not None:
                value = declared.choice.parse(value, declared.flag(name))
            elif value is not None and declared.parse is not None:
                value = declared.parse(value)
            object.__setattr__(self, name, value)
        check_options(self, DEFAULTS)

    @property
    def video_fps(self) -> float | None:
        """Video frames kept per second, as OUT records it (0: every frame); None if not given."""
        return 0.0 if self.every_frame else None if self.fps is None else float(self.fps)

    def with_defaults(self) -> ExtractOptions:
        """These options with every setting left out at its declared default (what a new
        output takes): for the building blocks used outside a job, which has no OUT."""
        left_out = {  # video_fps is two flags: --every-frame leaves --fps None
            name: s.default
            for name, s in declarations().items()
            if s.from_out and getattr(self, s.record_as or name) is None
        }
        return replace(self, **left_out) if left_out else self

    @property
    def image_size(self) -> list[int] | None:
        """`size` as OUT records it."""
        return None if self.size is None else list(self.size)


def declarations() -> dict[str, Setting]:
    """Each option's declaration, by field name, in declaration order."""
    return {f.name: f.metadata["setting"] for f in fields(ExtractOptions)}


#: What each option left out takes on a new output (a resume takes OUT's instead).
DEFAULTS = SimpleNamespace(**{name: s.default for name, s in declarations().items()})
