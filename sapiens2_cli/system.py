"""What the machine gives this process (shared by the decode workers and video threads)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1
