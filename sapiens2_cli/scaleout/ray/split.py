"""`RaySplit`: the engine's checked steps (engine/job.py) unchanged, on a Ray cluster.

The driver (this process) does what a local run does up to the work: checks the options
and OUT, lists the inputs, leaves out what OUT holds (its own manifest or file decides, so
a resume decodes nothing done), resolves the weights and opens OUT's writer. Then, instead
of the local loop, the pending items go to Ray Data as tasks (scaleout/ray/tasks.py):
decoded in CPU tasks, run by model actors that write the rows beside OUT, and committed
into OUT by the driver, task by task as Ray reports them done, with the writer's protocol
(npy shards + manifest, HDF5 batches). Row order is commit order, that is the order tasks
finish; keys, not positions, identify rows (docs/format.md).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.engine.split import Split
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import FeatureWriter, RowBatch
from sapiens2_cli.output.npy.writer import NpyWriter
from sapiens2_cli.scaleout.ray.session import RaySession, import_ray
from sapiens2_cli.scaleout.ray.tasks import (
    new_run_folder,
    read_task,
    remove_runs,
    remove_task,
    task_features,
    task_rows,
)

if TYPE_CHECKING:
    import torch

    from sapiens2_cli.engine.progress import Progress, Summary
    from sapiens2_cli.engine.runner import Extraction, OutputSpec
    from sapiens2_cli.scaleout.ray.stages import TaskDone


@contextlib.contextmanager
def ray_split(opts: ExtractOptions) -> Iterator[RaySplit]:
    """The split of an `--engine ray` job; Ray is left (or stopped) when the job ends."""
    import_ray()  # without the extra: one line, before any work
    split = RaySplit(RaySession(opts.ray_address))
    try:
        yield split
    finally:
        split.session.close()


class RaySplit(Split):
    """One driver writing OUT, the work done by Ray tasks and actors."""

    def __init__(self, session: RaySession) -> None:
        self.session = session
        self.gpus = 0

    def device(self, requested: str) -> torch.device:
        """The actors' device: the cluster's GPUs for auto or cuda (one actor each),
        else the CPU; `--device cuda` on a cluster without GPUs is one line."""
        import torch

        ray = self.session.connect()
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        spec = requested.strip().lower()
        if spec == "cpu":
            self.gpus = 0
            return torch.device("cpu")
        if spec == "auto":
            return torch.device("cuda" if self.gpus else "cpu")
        if not spec.startswith("cuda"):
            raise Sapiens2Error(f"unknown device '{requested}': use auto, cpu or cuda")
        if spec != "cuda":
            raise Sapiens2Error(
                f"--device {requested}: with --engine ray each actor gets its own GPU from "
                "Ray; give --device cuda (or auto)"
            )
        if not self.gpus:
            raise Sapiens2Error(
                "--device cuda, but the Ray cluster has no GPUs: use --device cpu (or auto), "
                "or add GPU nodes"
            )
        return torch.device("cuda")

    def plan(self, out: OutputSpec) -> OutputSpec:
        """OUT must be where every node can write the rows: checked before any work."""
        from sapiens2_cli.scaleout.ray.reach import check_shared

        check_shared(self.session.connect(), out.path)
        return out

    def run(self, extraction: Extraction, bar: Progress) -> Summary:
        """The pending items through Ray; on Ctrl-C OUT keeps every committed task."""
        from sapiens2_cli.engine.runner import Interrupted

        writer, start = extraction.writer, time.perf_counter()
        batch = extraction.options.batch_size
        counts = {"done": 0, "failed": 0}
        try:
            if extraction.failures:
                writer.write(RowBatch([], None, {}, list(extraction.failures)))
                counts["failed"] += len(extraction.failures)
            if extraction.pending:
                folder = new_run_folder(writer.path)
                for done in self._tasks(extraction, folder):
                    _commit(writer, folder, done)
                    counts["done"] += done.rows
                    counts["failed"] += len(done.failures)
                    bar.update(done.rows, len(done.failures))
        except KeyboardInterrupt:
            bar.close()
            writer.close(complete=False)
            raise Interrupted(extraction.summary(counts, start, False, batch_size=batch)) from None
        except BaseException as e:
            bar.close()
            with contextlib.suppress(Exception):  # keep what was committed; show the cause
                writer.close(complete=False)
            line = _one_line(e)
            if line is e:
                raise
            raise line from None
        bar.close()
        writer.close(complete=True)
        remove_runs(writer.path)
        return extraction.summary(counts, start, True, batch_size=batch)

    def _tasks(self, extraction: Extraction, folder: Path) -> Iterator[TaskDone]:
        """Every task's result as Ray reports it done (any order)."""
        from sapiens2_cli.engine.loader import pack, work_units
        from sapiens2_cli.inputs.items import Preprocess
        from sapiens2_cli.scaleout.ray.stages import ActorPlan, ModelActor, decode_tasks

        ray = self.session.connect()
        opts = extraction.options
        units = work_units(extraction.pending, opts.batch_size or task_rows(opts.size, None))
        packed = pack(units, task_rows(opts.size, opts.batch_size))
        groups = [[units[j] for j in group] for group in packed]
        tasks = [{"task": i, "units": pickle.dumps(group)} for i, group in enumerate(groups)]
        plan = ActorPlan(
            weights=extraction.weights.path,
            arch_flag=extraction.weights.arch_flag,
            options=opts,
            device=extraction.device.type,
            grid=extraction.grid,
            projection=extraction.projection,
            folder=folder,
            threads=None if self.gpus else _cpu_threads(),
        )
        actors, per_actor = self._actors(ray)
        prep = Preprocess(opts.size, opts.resize, opts.jpeg_draft)
        data = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        # The memory a decode task holds (its pixels, and their pickled copy) also keeps
        # Ray from fusing decoding into the actors, which would take it off the CPU tasks.
        rows = max(sum(map(len, group)) for group in groups)
        data = data.map_batches(
            decode_tasks,
            fn_kwargs={"prep": prep},
            batch_size=1,
            num_cpus=1,
            memory=2 * rows * opts.size[0] * opts.size[1] * 3,
        )
        data = data.map_batches(
            ModelActor,
            fn_constructor_kwargs={"plan": plan},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            **per_actor,
        )
        for row in data.iter_rows():
            yield pickle.loads(row["done"])

    def _actors(self, ray) -> tuple[int, dict[str, float]]:
        """How many model actors, and what each holds: a GPU each on a GPU cluster; on CPU
        one per node, holding all its CPUs but the one decoding takes."""
        if self.gpus:
            return self.gpus, {"num_gpus": 1, "num_cpus": 1}
        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        least = min(int(n["Resources"]["CPU"]) for n in nodes)
        return len(nodes), {"num_cpus": max(1, least - 1)}


def _cpu_threads() -> int | None:
    """A CPU actor's torch threads: OMP_NUM_THREADS where the driver was given it, else
    every core of its node, as the local engine's forward uses (decoding takes little)."""
    given = os.environ.get("OMP_NUM_THREADS")
    if given and given.isdigit():
        return int(given)
    from sapiens2_cli.system import usable_cores

    return usable_cores()


def _commit(writer: FeatureWriter, folder: Path, done: TaskDone) -> None:
    """A finished task's rows and failures into OUT with the writer's commit protocol, then
    its files go. npy: the task's features file becomes a shard of OUT, renamed, not
    copied; HDF5: its rows are copied in, as `merge --merge copy` joins a part."""
    if done.rows:
        rows = replace(read_task(folder, done.task), failures=done.failures)
        if isinstance(writer, NpyWriter):
            writer.adopt(task_features(folder, done.task), rows)
        else:
            writer.write(rows)
        remove_task(folder, done.task)
    elif done.failures:
        writer.write(RowBatch([], None, {}, done.failures))


def _one_line(error: BaseException) -> BaseException:
    """The Sapiens2Error a task raised (a float16 range check, say), as its one line, out of
    the error Ray wraps it in (whose text holds the remote traceback); else `error`."""
    seen: BaseException | None = error
    while seen is not None:
        cause = getattr(seen, "cause", None)  # a RayTaskError's original exception
        if isinstance(cause, BaseException):
            seen = cause
        elif isinstance(seen, Sapiens2Error):  # one line, to which Ray adds its own
            return Sapiens2Error(str(seen).splitlines()[0])
        else:
            seen = seen.__cause__
    return error
