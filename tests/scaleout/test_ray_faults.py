"""Faults on a real Ray run, each on its own Ray instance on 127.0.0.1: a model actor killed
mid-task, a worker node lost mid-run, the driver killed with SIGKILL, Ctrl-C. Every run
must end with each row exactly once and the local engine's features (bit for bit, fp32).
A corrupt image's failure record is compared in test_ray_engine.py."""

from __future__ import annotations

import json
import signal

import pytest
from events import committed_rows, wait_for_rows
from extract_helpers import extract_subprocess
from paths import TINY
from ray_helpers import LOCAL, LOOPBACK, RAY, assert_same_rows, local_ray, make_inputs, ray, run

import sapiens2_cli
from sapiens2_cli.output.npy.writer import MANIFEST, is_own_file, listed_files
from sapiens2_cli.scaleout.ray.stages import KILL_ONCE
from sapiens2_cli.scaleout.ray.tasks import tasks_root

pytestmark = pytest.mark.slow

#: One image a task (and a shard), so a fault lands with most of the run still to do.
SMALL_TASKS = ["--batch-size", "1", "--rows-per-shard", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("faults") / "in", generated=24)


@pytest.fixture(scope="module")
def local(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "f"
    run(inputs, "-o", out, *LOCAL)
    return out


def assert_clean(out) -> None:
    """No file in OUT that its manifest does not list, no task files beside it."""
    manifest = json.loads((out / MANIFEST).read_text())
    assert {p.name for p in out.iterdir() if is_own_file(p.name)} == listed_files(manifest)
    assert not tasks_root(out).exists()


def test_a_model_actor_killed_mid_task_is_restarted_and_its_task_redone(inputs, local, tmp_path):
    """The actor SIGKILLs itself between writing its first task's two files. Catches: a
    run that fails or hangs on a dead actor, a half-written task committed or committed
    twice, its rows lost."""
    marker = tmp_path / "killed"
    with local_ray(**{KILL_ONCE: str(marker)}):
        run(inputs, "-o", tmp_path / "f", *RAY, *SMALL_TASKS)
    assert marker.exists(), "the actor was not killed: the test tested nothing"
    assert_same_rows(tmp_path / "f", local)
    assert_clean(tmp_path / "f")


def test_a_worker_node_lost_mid_run_the_run_completes(inputs, local, tmp_path):
    """Two nodes on 127.0.0.1; the second is removed once the first task is committed.
    Three CPUs a node: an actor holds all but the one decoding takes, so the lost node's
    actor, restarted, cannot take the survivor's decoding CPU. Catches: a run that fails or
    hangs when the node holding an actor or tasks goes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "include_dashboard": False, "node_ip_address": LOOPBACK},
    )
    worker = cluster.add_node(num_cpus=3, node_ip_address=LOOPBACK)
    lost = []

    def lose_the_worker(step) -> None:
        if not lost:
            cluster.remove_node(worker)
            lost.append(step.done)

    try:
        ray.init(address=cluster.address, include_dashboard=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        sapiens2_cli.extract(
            [inputs], tmp_path / "f", engine="ray", checkpoint=TINY, size="64x48",
            precision="fp32", batch_size=1, rows_per_shard=1, progress=lose_the_worker,
        )  # fmt: skip
        assert len([n for n in ray.nodes() if n["Alive"]]) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert lost
    assert_same_rows(tmp_path / "f", local)
    assert_clean(tmp_path / "f")


def test_the_driver_killed_with_sigkill_resumes_to_the_same_output(inputs, local, tmp_path):
    """Catches: a resume that redoes committed rows or loses uncommitted ones, task files of
    the killed driver committed or left behind."""
    out = tmp_path / "f"
    args = [inputs, "-o", out, *RAY, *SMALL_TASKS]
    with local_ray() as address:
        proc = extract_subprocess(*args, env={"RAY_ADDRESS": address})
        try:
            wait_for_rows(proc, out, 1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        killed_at = committed_rows(out)
        manifest = json.loads((out / MANIFEST).read_text())
        assert manifest["complete"] is False and killed_at >= 1
        run(*args)
    assert_same_rows(out, local)
    assert_clean(out)
    assert killed_at < len(json.loads((out / MANIFEST).read_text())["shards"])


def test_ctrl_c_is_one_line_exit_130_and_keeps_the_committed_rows(inputs, local, tmp_path):
    """Catches: Ray's traceback (or a hang) instead of the tool's line, committed rows lost."""
    out = tmp_path / "f"
    args = [inputs, "-o", out, *RAY, *SMALL_TASKS]
    with local_ray() as address:
        proc = extract_subprocess(*args, env={"RAY_ADDRESS": address})
        try:
            wait_for_rows(proc, out, 2)
            seen = committed_rows(out)
        finally:
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "run the same command again to resume" in stderr and "Traceback" not in stderr
        assert seen <= committed_rows(out)
        run(*args)
    assert_same_rows(out, local)
    assert_clean(out)
