"""Which Ray cluster a run uses, joined only once the run needs it and left when it ends.

`--ray-address` or RAY_ADDRESS: an existing cluster (probed first, so an unreachable one is
one line within seconds rather than Ray's long retries); neither: a Ray instance on this
machine, started for the run and stopped after it, as a laptop would run it. A process
already connected to Ray (a user's own `ray.init`) keeps its connection.
"""

from __future__ import annotations

import logging
import os
import socket
from types import ModuleType

from sapiens2_cli.errors import Sapiens2Error

#: Seconds the probe of a cluster's address waits for an answer.
PROBE_S = 10.0


def import_ray() -> ModuleType:
    """`ray`, with Ray Data; one line naming the extra when it is not installed."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise Sapiens2Error(
            "--engine ray needs Ray Data, which is not installed: pip install 'sapiens2-cli[ray]'"
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """Where a `host:port` or `ray://host:port` address listens; None for `auto`/`local`."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """One line if nothing answers at `address` within PROBE_S seconds."""
    where = _host_port(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=PROBE_S):
            pass
    except OSError as e:
        raise Sapiens2Error(
            f"no Ray cluster answers at {address} ({e.strerror or e}): start one (ray start "
            "--head), fix --ray-address / RAY_ADDRESS, or unset it to run Ray on this machine"
        ) from None


#: Ray's switch (read when ray is imported) between a node's network address and 127.0.0.1
#: for the instances it starts: "0" keeps them on 127.0.0.1, as on macOS and Windows.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RaySession:
    """The run's connection to Ray: made by `connect`, ended by `close` if this run made it."""

    def __init__(self, address: str | None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._ray: ModuleType | None = None
        self._owned = False

    def connect(self) -> ModuleType:
        """`ray`, connected (once) to the run's cluster."""
        if self._ray is not None:
            return self._ray
        if self.address is None:  # a Ray for this run alone listens on 127.0.0.1 only
            os.environ.setdefault(LOOPBACK_ONLY, "0")
        ray = import_ray()
        if not ray.is_initialized():
            if self.address is not None:
                check_reachable(self.address)
            ray.init(
                address=self.address or "local",
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=True,
            )
            self._owned = True
        # The run's stderr is ours: its bar, and an error as the run raises it (once).
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.raise_original_map_exception = True  # a task's Sapiens2Error, not Ray's
        self._ray = ray
        return ray

    def close(self) -> None:
        """Leave the cluster (stopping a Ray instance the run started) if this run joined it."""
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray, self._owned = None, False
