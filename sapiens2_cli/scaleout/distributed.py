"""torchrun's environment: which rank this process is, its GPU, and what the ranks share.

Features never travel between ranks: each writes its own part beside OUT. The ranks share
only small things: the image list (made once on rank 0, so every rank splits the same list
and only one process reads stdin, which torchrun hands to all of them), progress counts
(through torchrun's key-value store, so rank 0 can show the total), and the final counts.
Those go over gloo; on GPUs the default group is nccl and each rank is pinned to
cuda:LOCAL_RANK.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

import torch
import torch.distributed as dist

from sapiens2_cli.engine.progress import Progress
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.scaleout.ranks import Ranks

T = TypeVar("T")
#: How long a rank waits in a collective: rank 0 may list millions of files on a network
#: filesystem while the others wait for the list. A rank that dies ends the job sooner:
#: torchrun stops the other ranks.
TIMEOUT = timedelta(hours=6)
POLL_S = 0.5  # how often rank 0 refreshes the total while it waits for the others


class RankGroup:
    """The ranks of a torchrun job as one group; with a single rank every call is local.

    Use it as a context: leaving it shuts the process group down.
    """

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks = ranks
        self._group: dist.ProcessGroup | None = None  # gloo; None: the default group
        if ranks.distributed:
            _import_group_defaults()
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs = {"device_id": device} if backend == "nccl" else {}
            dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
            if backend == "nccl":
                self._group = dist.new_group(backend="gloo", timeout=TIMEOUT)
        self._bar: SharedProgress | None = None

    @property
    def leader(self) -> bool:
        """Rank 0: reads stdin, shows progress, joins the parts and reports."""
        return self.ranks.rank == 0

    def first(self, make: Callable[[], T]) -> T:
        """`make()` run on rank 0 only, its result (or its error) handed to every rank."""
        if not self.ranks.distributed:
            return make()
        box: list = [None]
        if self.leader:
            try:
                box[0] = ("ok", make())
            except Sapiens2Error as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0, group=self._group)
        kind, value = box[0]
        if kind == "error":
            raise Sapiens2Error(value)
        return value

    def gather(self, value: T) -> list[T]:
        """`value` from every rank, in rank order (after every rank got here)."""
        if not self.ranks.distributed:
            return [value]
        values: list = [None] * self.ranks.world
        dist.all_gather_object(values, value, group=self._group)
        return values

    def progress(self, pending: int, enabled: bool) -> Progress:
        """A bar over every rank's pending images, drawn by rank 0 only."""
        if not self.ranks.distributed:
            return Progress(pending, enabled)
        total = sum(self.gather(pending))
        self._bar = SharedProgress(
            dist.distributed_c10d._get_default_store(), total, enabled and self.leader
        )
        return self._bar

    def wait(self) -> None:
        """Return once every rank has finished its part (rank 0 keeps its bar moving)."""
        if self._bar is not None:
            self._bar.wait(self.ranks.world)
        self.gather(None)

    def __enter__(self) -> RankGroup:
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None  # holds the store, which must not outlive the process group
        if dist.is_initialized():
            if kind is None:  # tear gloo down together, not while a peer still uses it
                dist.barrier(group=self._group)
            dist.destroy_process_group()


def _import_group_defaults() -> None:
    """Import, before the default group exists, the torch modules that name it as a default
    argument (`group=group.WORLD`, evaluated at their import).

    Imported later (torch.distributed.nn is, by the first operation on the meta device,
    which building the model does), they would hold the group past
    `destroy_process_group`: its gloo threads then run on into interpreter shutdown, which
    now and then aborts a rank with "terminate called without an active exception".
    """
    import torch.distributed.nn.functional  # noqa: F401


class SharedProgress(Progress):
    """Every rank adds its counts to torchrun's key-value store; rank 0 shows the sums.

    `close` only records that this rank is done (the run calls it when its own images are);
    `wait` keeps rank 0's bar moving until every rank is, then closes it.
    """

    KEYS = ("sapiens2/processed", "sapiens2/failed", "sapiens2/finished")

    def __init__(self, store: dist.Store, total: int, enabled: bool) -> None:
        super().__init__(total, enabled)
        self._store = store
        self._finished = False

    def update(self, done: int, failed: int) -> None:
        processed, failed_all, _ = self._add(done + failed, failed, 0)
        self.show(processed, failed_all)

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._add(0, 0, 1)

    def wait(self, world: int) -> None:
        while True:
            processed, failed, finished = self._add(0, 0, 0)
            self.show(processed, failed)
            if finished >= world:
                break
            time.sleep(POLL_S)
        self.stop()

    def stop(self) -> None:
        """Take the bar off the screen."""
        super().close()

    def show(self, processed: int, failed: int) -> None:
        """Set the bar to the counts summed over the ranks."""
        self._bar.update(processed - self._bar.n)
        if failed != self.failed:
            self.failed = failed
            self._bar.set_postfix(failed=failed, refresh=False)

    def _add(self, *counts: int) -> tuple[int, ...]:
        return tuple(self._store.add(key, n) for key, n in zip(self.KEYS, counts, strict=True))
