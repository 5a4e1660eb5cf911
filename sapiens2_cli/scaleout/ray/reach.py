"""Whether every node of a Ray cluster can reach OUT: the actors write rows beside it.

On one node there is nothing to check. On several, the driver leaves a file in OUT's
folder and a task pinned to each node looks for it; a node that does not see it is not on
the same (shared) filesystem, and the run stops with one line before any work.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import ModuleType

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output.disk import nearest_folder


def _sees(path: str) -> bool:
    return os.path.exists(path)


def check_shared(ray: ModuleType, out: Path) -> None:
    """One line if some alive node of the cluster cannot see OUT's folder."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = nearest_folder(out.resolve().parent)
    probe = folder / f".sapiens2-ray-probe-{uuid.uuid4().hex[:12]}"
    probe.touch()
    try:
        sees = ray.remote(num_cpus=0)(_sees)
        found = ray.get(
            [
                sees.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(probe))
                for n in nodes
            ]
        )
    finally:
        probe.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, seen in zip(nodes, found, strict=True) if not seen]
    if blind:
        raise Sapiens2Error(
            f"{out} is not on a filesystem every Ray node shares (node {blind[0]} cannot see "
            f"{folder}): give -o a path on a filesystem every node mounts at the same place"
        )
