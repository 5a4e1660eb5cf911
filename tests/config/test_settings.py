"""The settings an output records: one declaration, documented, and the resume rule."""

from __future__ import annotations

import re
from dataclasses import fields

from paths import DOCS

from sapiens2_cli.config.settings import OutputSettings, difference, resume_keys, settings_docs


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
    """Catches: a resume refused for a changed tool version, or allowed with other layers."""
    base = OutputSettings(arch="1b", layers=[17], tool_version="0.1.0", image_size=[64, 48])
    existing = base.to_dict()
    assert difference(existing, {**existing, "tool_version": "9.9"}) is None
    message = difference(existing, {**existing, "layers": [3]})
    assert message is not None and message.startswith("--layers")
    assert "None" not in str(OutputSettings().to_dict())  # None fields are not written


def test_an_older_output_without_a_newer_setting_reads_as_its_default():
    """Catches: every output made before jpeg_draft existed refusing to resume."""
    old = OutputSettings(arch="1b").to_dict()
    del old["jpeg_draft"]
    assert difference(old, OutputSettings(arch="1b").to_dict()) is None
    assert {f.name for f in fields(OutputSettings)} >= set(resume_keys())
