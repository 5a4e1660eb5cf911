"""Which rank of a torchrun job this process is, from the environment torchrun sets.

Apart from distributed.py (the process group) so that a run's checks, which need to know
the part this process writes, come before torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sapiens2_cli.config.values import Part
from sapiens2_cli.errors import Sapiens2Error

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (one rank of one outside torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them."""
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            world = int(environ["WORLD_SIZE"])
            rank = int(environ.get("RANK", "0"))
            local_rank = int(environ.get("LOCAL_RANK", rank))
        except ValueError:
            raise Sapiens2Error(
                "RANK, WORLD_SIZE and LOCAL_RANK must be integers: launch with torchrun, "
                "or unset them"
            ) from None
        if not 0 <= rank < world or local_rank < 0:
            raise Sapiens2Error(
                f"RANK {rank} does not fit WORLD_SIZE {world}: launch with torchrun, or unset them"
            )
        return cls(rank, world, local_rank)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def part(self, given: Part | None) -> Part | None:
        """The part this process writes: the one --shard gives, its rank's, or both nested
        (rank r of W in part i of N writes part i*W + r of N*W); None: OUT itself."""
        if not self.distributed:
            return given
        outer = given or Part(0, 1)
        return Part(outer.index * self.world + self.rank, outer.count * self.world)

    def pin(self, device: torch.device) -> torch.device:
        """Under torchrun, a CUDA device becomes this rank's GPU, cuda:LOCAL_RANK."""
        import torch

        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None:
            raise Sapiens2Error(
                f"--device {device} under torchrun: each rank uses cuda:LOCAL_RANK, so pass "
                "--device cuda (or auto); choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        visible = torch.cuda.device_count()
        if self.local_rank >= visible:
            raise Sapiens2Error(
                f"LOCAL_RANK {self.local_rank} has no GPU ({visible} visible): start at most "
                f"{visible} processes per node (--nproc-per-node)"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)
