"""The command line as a whole: start-up cost, one-line errors, Ctrl-C, the archs table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from events import IMPORT_LINES, imported, wait_for_line
from extract_helpers import FAST, extract, sapiens2, sapiens2_subprocess, start_subprocess
from paths import TINY
from PIL import Image

from sapiens2_cli.cli import main
from sapiens2_cli.model.zoo import ZOO_COST
from sapiens2_cli.output.lock import OutputLock
from sapiens2_cli.text import plural

HEAVY = ("torch", "h5py", "PIL", "huggingface_hub", "pyarrow")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | env,
    )


def _run_for_imports(argv: list[str]) -> tuple[int, str, list[str]]:
    """Run `sapiens2 ARGV` in a fresh interpreter: (exit code, stderr, HEAVY modules loaded)."""
    code = (
        "import sys\n"
        "from sapiens2_cli.cli import main\n"
        f"sys.argv = ['sapiens2', *{argv!r}]\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n"
        f"    print(e.code, [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
    )
    lines = _python(code).stderr.strip().splitlines()
    exit_code, loaded = lines[-1].split(" ", 1)
    return int(exit_code), "\n".join(lines[:-1]), eval(loaded)


def _main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """Run the console-script entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["sapiens2", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [(["--help"], ()), (["archs"], ("huggingface_hub",))],
)
def test_help_and_archs_do_not_import_torch(argv, allowed):
    """Bug: a top-level import of torch (or h5py, Pillow) in a command module makes every
    command, `--help` included, pay seconds before printing anything."""
    exit_code, stderr, loaded = _run_for_imports(argv)
    assert exit_code == 0, stderr
    assert [m for m in loaded if m not in allowed] == []


def test_the_imported_app_has_every_command():
    """Bug: commands registered only inside main(), so `app` from an import had none."""
    result = sapiens2("--help")
    assert result.exit_code == 0
    for command in ("extract", "download", "archs", "bench", "inspect", "viz", "merge"):
        assert command in result.stdout
    assert "--layers" in sapiens2("extract", "--help").stdout


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["bench", "--stepz", "3"], "No such option: --stepz"),
        (["merge"], "Missing option '--output'"),
        (["bench", "--steps", "x"], "Invalid value for '--steps'"),
        (["inspect"], "Missing argument 'checkpoint'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_line(monkeypatch, capsys, argv, pattern):
    """Bug: the parser's errors came as a usage line, a hint and a boxed message."""
    code, out, err = _main(monkeypatch, capsys, *argv)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and pattern in err
    assert "--help" in err


@pytest.mark.parametrize("steps", ["-3", "0"])
def test_bench_checks_every_flag_before_any_output(monkeypatch, capsys, steps):
    """Bug: `bench --steps -3` built the model and printed 'timing ...' before failing."""
    code, out, err = _main(monkeypatch, capsys, "bench", "--arch", "0.1b", "--steps", steps)
    assert (code, out) == (2, "")
    assert err.splitlines() == [err.strip()] and "--steps" in err and "timing" not in err


def test_bench_missing_pipeline_folder_fails_before_work(monkeypatch, capsys, tmp_path):
    code, out, err = _main(
        monkeypatch, capsys, "bench", "--arch", "0.1b", "--pipeline", str(tmp_path / "none")
    )
    assert (code, out) == (2, "")
    assert err == f"error: --pipeline {tmp_path / 'none'} is not a folder of images\n"


#: Moments of `bench`'s start-up, each an event on its stderr: the command line loaded,
#: inside numpy's import (under torch's), inside torch's, torch loaded (the model being
#: built), and the timing loop running.
STARTING = {
    "command line loaded": imported("sapiens2_cli.cli"),
    "inside numpy's import": imported("numpy._core._multiarray_umath"),
    "inside torch's import": imported("torch._C"),
    "deep in torch's import": imported("torch.nn"),
    "torch loaded": imported("torch"),
    "timing": lambda line: line.startswith("timing "),
}


@pytest.mark.parametrize("moment", list(STARTING))
def test_ctrl_c_while_starting_is_one_line_and_130(moment):
    """Bug: Ctrl-C during the first seconds (imports, torch's above all) printed a
    traceback; caught, it could still end the process by SIGINT (status -2), not 130,
    and inside numpy's import it became an ImportError (exit 1) or was swallowed; just
    after the command line loaded, `cli.main` was still setting up logging before its
    `try` (a traceback and -2)."""
    endless = ["bench", "--arch", "0.1b", "--size", "32x32", "--batch-size", "1"]
    process = start_subprocess(*endless, "--steps", "1000000", env=IMPORT_LINES)
    try:
        before = wait_for_line(process, STARTING[moment])
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    lines = [line for line in [*before, *err.splitlines()] if not line.startswith("import time:")]
    assert process.returncode == 130, lines
    assert "Traceback" not in err
    assert lines[-1] == "interrupted"
    assert [line for line in lines[:-1] if not line.startswith("timing ")] == []
    assert out == ""


def test_a_ctrl_c_during_logging_set_up_waits_until_the_handler_is_built():
    """Catches: a Ctrl-C landing inside logging's handler set-up, which leaves a handler
    registered without its stream (logging's shutdown at exit then prints a traceback):
    the signal must arrive after the block, with the handler whole."""
    code = (
        "import logging, os, signal\n"
        "from sapiens2_cli.interrupt import ctrl_c_deferred\n"
        "try:\n"
        "    with ctrl_c_deferred():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        logging.basicConfig()\n"
        "except KeyboardInterrupt:\n"
        "    handlers = logging.getLogger().handlers\n"
        "    print(len(handlers), all(hasattr(h, 'stream') for h in handlers))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "1 True\n"), done.stderr


def _archs(columns: int) -> str:
    result = sapiens2_subprocess("archs", env={"COLUMNS": str(columns)}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_archs_fits_the_width_without_cutting_numbers(columns):
    """Bug: at 80 columns rich cut numbers and names ('1,455,47…'); piped output was
    padded with spaces to 116 columns."""
    text = _archs(columns)
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines), text
    assert all(line == line.rstrip() for line in lines), "trailing padding"
    for arch, cost in ZOO_COST.items():
        row = next(line for line in lines if line.split(" ", 1)[0] == arch)
        assert f"{cost.parameters:,}" in row
        assert f"{cost.flops_per_image / 1e12:.3f}" in row
        assert (f"facebook/sapiens2-pretrain-{arch}" in row) == (columns == 200)
    assert ("hub: facebook/sapiens2-pretrain-ARCH" in text) == (columns == 80)


def test_archs_json_counts_come_from_the_zoo_table():
    rows = json.loads(sapiens2("archs", "--json").stdout)
    assert {r["arch"]: (r["parameters"], r["flops_per_image"]) for r in rows} == ZOO_COST


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 parts"), (1, "1 part"), (2, "2 parts"), (1200, "1200 parts")],
)
def test_plural(count, expected):
    assert plural(count, "part") == expected


def test_plural_irregular():
    assert plural(1, "patch", "patches") == "1 patch"
    assert plural(3, "patch", "patches") == "3 patches"


@pytest.mark.slow  # extracts one image first
def test_merge_counts_one_part_in_the_singular(tmp_path, monkeypatch):
    """Bug: 'joined 1 parts (1 rows, ...)'."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    out = tmp_path / "f.h5"
    result = extract(image, "-o", out, *FAST, "--shard", "0/1")
    assert result.exit_code == 0, result.output
    merged = sapiens2("merge", "-o", out)
    assert merged.exit_code == 0, merged.output
    assert f"joined 1 part (1 row, 0 failed) into {out}" in merged.stderr


def test_bare_command_shows_the_help_not_an_error(monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys)
    assert code == 2
    assert "Usage:" in out + err and "extract" in out + err
    assert "error" not in err and not err.startswith("\n")


def _refusal_imports(argv: list[str]) -> tuple[str, list[str]]:
    """Run `sapiens2 ARGV` in a fresh interpreter: (its stderr, the HEAVY modules loaded)."""
    exit_code, stderr, loaded = _run_for_imports(argv)
    assert exit_code == 2, stderr
    return stderr, loaded


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layout", "map", "--tokens", "cls"], "--layout map needs --tokens patch"),
        (["--layers", "1,,2"], "not a list of block indices"),
        (["--compile-mode", "max-autotune"], "applies with --compile"),
        (["--size", "99999999999999999999x16"], "each side is at most 16384"),
        (["--fps", "1", "--every-frame"], "give one"),
        (["--tokens", "mean"], "different settings: --tokens"),  # OUT made with patch tokens
        (["--lock"], "is being written by another run"),  # the test holds OUT's lock
        (["--lock", "--via-link"], "is being written by another run"),  # -o: a link to OUT
    ],
)
def test_refusals_that_need_no_weights_come_before_torch(tmp_path, monkeypatch, flags, message):
    """Bug: torch (2+ s) was imported before any check, so a mistyped flag took 2-3 s and
    'being written by another run' almost 5 s, where the docs promise it stops at once."""
    out = tmp_path / "f.h5"
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    if flags == ["--tokens", "mean"]:
        assert extract(image, "-o", out, *FAST).exit_code == 0
    lock = OutputLock(out) if "--lock" in flags else None
    given = out
    if "--via-link" in flags:  # the early check must look for the lock of the linked file
        given = tmp_path / "alias.h5"
        given.symlink_to(out.name)
    try:
        argv = [
            "extract",
            str(image),
            "-o",
            str(given),
            "--checkpoint",
            str(TINY),
            "--size",
            "64x48",
        ]
        err, loaded = _refusal_imports(
            [*argv, *[f for f in flags if f not in ("--lock", "--via-link")]]
        )
    finally:
        if lock is not None:
            lock.release()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert "torch" not in loaded
