"""The settings: each option declared once (config/options.py), documented, with its resume
rule, and the command line built from the declarations."""

from __future__ import annotations

import re

import typer.main
from paths import DOCS

from sapiens2_cli.cli import app
from sapiens2_cli.config.options import DEFAULTS, ExtractOptions, declarations
from sapiens2_cli.config.records import difference, recorded, resume_keys, settings_docs


def _settings_table() -> dict[str, tuple[str, str]]:
    """docs/format.md's settings table: key -> (resume column, meaning)."""
    section = (DOCS / "format.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \| (.+) \|$", section, re.M)
    return {key: (resume, meaning) for key, resume, meaning in rows}


def test_every_setting_is_documented_with_its_resume_rule():
    """Catches: a new setting (like weights_dtype once was) written and compared on resume
    but missing from the docs, or documented with the wrong resume rule."""
    table = _settings_table()
    assert set(table) == set(settings_docs())
    for key, doc in settings_docs().items():
        resume, meaning = table[key]
        assert (resume == "yes") == (key in resume_keys()), key
        assert doc in meaning, (key, doc, meaning)


def test_resume_compares_only_the_settings_that_define_the_numbers():
    """Catches: a resume refused for a changed tool version, or allowed with other layers;
    and a setting absent on one side passing as equal."""
    existing = {"arch": "1b", "layers": [17], "tool_version": "0.1.0", "image_size": [64, 48]}
    assert difference(existing, {**existing, "tool_version": "9.9"}) is None
    message = difference(existing, {**existing, "layers": [3]})
    assert message is not None and message.startswith("--layers")
    assert difference(existing, {**existing, "pool": 2}).startswith("--pool")


def test_a_run_records_each_declared_setting_as_files_store_it():
    """Catches: a declared setting missing from what OUT records, or stored as a Python
    object (an enum, a tuple) instead of the text and lists the files hold."""
    settled = ExtractOptions(arch="0.4b", size="64x48", layers=(3,), fps=2).with_defaults()
    settled = ExtractOptions(**{**vars(settled), "precision": "fp32", "weights_dtype": "fp32"})
    assert recorded(settled) == {
        "arch": "0.4b",
        "image_size": [64, 48],
        "resize": "stretch",
        "jpeg_draft": False,
        "layers": [3],
        "tokens": "patch",
        "layout": "tokens",
        "dtype": "float16",
        "pool": 1,
        "precision": "fp32",
        "weights_dtype": "fp32",
        "video_fps": 2.0,
    }


def test_every_option_is_a_flag_with_its_declared_help_panel_and_default():
    """Catches: an option declared but missing from the command line, shown in another
    panel, or with its default left out of (or unformatted in) its help."""
    command = typer.main.get_command(app).commands["extract"]
    by_name = {p.name: p for p in command.params if p.param_type_name == "option"}
    for name, declared in declarations().items():
        param = by_name[name]
        assert declared.flag(name) in param.opts, name
        assert param.rich_help_panel == declared.panel, name
        assert "{" not in param.help.replace("{00000..00099}", ""), name
    assert f"default {DEFAULTS.box_padding:g}" in by_name["box_padding"].help
    assert "(default -1)" in by_name["layers"].help
    assert "off by default" in by_name["jpeg_draft"].help
