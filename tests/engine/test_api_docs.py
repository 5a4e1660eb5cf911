"""The runnable example in docs/api.md runs as written."""

from __future__ import annotations

from dataclasses import fields

from docs_examples import examples, run_example
from paths import DOCS, ROOT


def test_api_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    run_example(examples("api.md", "python", section="Example")[0], "api.md")
    out = capsys.readouterr().out
    assert "custom size" in out and "torch.Size([2, 32, 4, 3])" in out


def test_extract_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The folder-to-.h5 example: catches the library's extract drifting from its docs
    (argument names, the summary, what the file holds)."""
    (example,) = examples("api.md", "python", section="Extracting a folder")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the example's relative paths
    monkeypatch.chdir(tmp_path)
    run_example(example, "api.md")
    out = capsys.readouterr().out
    assert "4 images done, 0 failed" in out and "4 (4, 2, 12, 32)" in out
    assert (tmp_path / "feats.h5").is_file()


def test_every_extract_flag_is_the_keyword_of_the_same_name():
    """Catches: keywords named apart from their flags (`video_fps` for --fps, `compile` for
    --compile-mode), where docs/api.md says there is one keyword per flag."""
    import typer.main

    from sapiens2_cli.cli import app
    from sapiens2_cli.config.options import ExtractOptions

    command = typer.main.get_command(app).commands["extract"]
    flags = {
        p.opts[0].lstrip("-").replace("-", "_")
        for p in command.params
        if p.param_type_name == "option" and p.opts[0].startswith("--") and p.name != "help"
    }
    assert len(flags) > 30  # typer's own click: an isinstance check on click's finds none
    cli_only = {"output", "strict", "json", "quiet"}  # the API's second argument, exit code, prints
    assert flags - cli_only <= {f.name for f in fields(ExtractOptions)}
    text = (DOCS / "api.md").read_text()
    for flag in sorted(cli_only):
        assert f"`--{flag}`" in text, flag  # each difference said
