"""The two stages of a Ray run, as Ray Data `map_batches` functions, one task per row.

`decode_tasks` runs in CPU tasks: a task's work units decoded into uint8 pixels (H, W, 3)
and the rows' small columns, pickled into one block row: what travels through Ray's
object store, about H*W*3 bytes an image. `ModelActor` holds the model on its device
(GPU actors, one per GPU; CPU actors otherwise), makes the features with the reductions
(pool, projection, storage dtype) exactly as the local engine's DeviceModel does, writes
them beside OUT (scaleout/ray/tasks.py) and returns only the task's counts and failure
records, so features never cross the object store nor reach the driver through it.
"""

from __future__ import annotations

import os
import pickle
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sapiens2_cli.config.options import ExtractOptions
from sapiens2_cli.inputs.items import Item, Preprocess
from sapiens2_cli.reduce.projection import Projection
from sapiens2_cli.scaleout.ray.tasks import write_task

#: Fault injection for the tests: an actor that finds this variable set to a path which does
#: not exist yet creates it and kills its own process in the middle of its first task,
#: between writing that task's two files (so one Ray run sees exactly one dead actor).
KILL_ONCE = "SAPIENS2_RAY_KILL_ACTOR_ONCE"


@dataclass(frozen=True)
class TaskDone:
    """What a task sends the driver: no features, only where they are and what failed."""

    task: int
    rows: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def decode_tasks(batch: dict[str, np.ndarray], prep: Preprocess) -> dict[str, np.ndarray]:
    """Decode each task's units (a CPU task): its pixels and rows, pickled as one value."""
    from sapiens2_cli.engine.loader import Collate, decode_unit

    payloads = []
    for units in batch["units"]:
        units: list[list[Item]] = pickle.loads(units)
        decoded = Collate(prep.size)([decode_unit(unit, prep) for unit in units])
        payloads.append(pickle.dumps((decoded.pixels.numpy(), decoded.rows), protocol=5))
    return {"task": batch["task"], "payload": np.array(payloads, dtype=object)}


@dataclass(frozen=True)
class ActorPlan:
    """What every model actor needs, sent once when the actors start."""

    weights: Path
    arch_flag: str | None
    options: ExtractOptions  # settled, with size, layers and precisions resolved
    device: str
    grid: tuple[int, int]
    projection: Projection | None
    folder: Path  # the run's task files
    threads: int | None  # torch threads on a CPU actor; None: Ray's (its CPUs)


class ModelActor:
    """The model on one device; each call runs whole tasks and writes their rows."""

    def __init__(self, plan: ActorPlan) -> None:
        import torch

        from sapiens2_cli.engine.forward import DeviceModel
        from sapiens2_cli.model import load_backbone
        from sapiens2_cli.reduce.apply_projection import DeviceProjection

        if plan.threads is not None:
            torch.set_num_threads(plan.threads)
        opts, device = plan.options, torch.device(plan.device)
        if device.type == "cuda":
            torch.cuda.set_device(0)  # the GPU Ray gave this actor (CUDA_VISIBLE_DEVICES)
        model = load_backbone(
            plan.weights, plan.arch_flag, device=device, dtype=opts.weights_dtype.torch
        )
        projection = plan.projection and DeviceProjection(plan.projection, opts.layout, device)
        self.model = DeviceModel(model, opts, device, plan.grid, projection=projection)
        if opts.batch_size is None:
            self.model.batch_size = self.model.fit_batch(opts.size)
        self.folder = plan.folder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        done = []
        for task, payload in zip(batch["task"], batch["payload"], strict=True):
            pixels, rows = pickle.loads(payload)
            if len(rows.keys):
                made = self.model.submit(torch.from_numpy(pixels)).rows()
                rows = replace(rows, **made)
                write_task(self.folder, int(task), rows, between=_maybe_die)
            done.append(pickle.dumps(TaskDone(int(task), len(rows.keys), rows.failures)))
        return {"task": batch["task"], "done": np.array(done, dtype=object)}


def _maybe_die() -> None:
    """KILL_ONCE's fault, if asked for and not yet done."""
    marker = os.environ.get(KILL_ONCE)
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)
