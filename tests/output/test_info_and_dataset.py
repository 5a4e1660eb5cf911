"""`info` and `FeatureDataset` pinned where a slip would go unseen: the format read from the
file not its name, `complete` said once, negative indices refused."""

from __future__ import annotations

import json

import pytest
from extract_helpers import FAST, extract
from paths import DATA
from typer.testing import CliRunner

from sapiens2_cli.cli import app
from sapiens2_cli.output.dataset import FeatureDataset


@pytest.fixture(scope="module")
def noext(tmp_path_factory):
    """An HDF5 output named without a suffix (`-o noext --format h5`)."""
    out = tmp_path_factory.mktemp("info") / "noext"
    result = extract(DATA, *FAST, "--format", "h5", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def info(out) -> dict:
    shown = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


def test_info_takes_the_format_from_the_file_not_its_name(noext):
    assert info(noext)["format"] == "h5"


def test_info_says_complete_once_not_inside_settings(noext):
    fields = info(noext)
    assert fields["complete"] is True and "complete" not in fields["settings"]
    text = CliRunner().invoke(app, ["info", str(noext)]).stdout
    assert text.count("complete") == 1, text


def test_a_feature_dataset_refuses_a_negative_index(noext):
    data = FeatureDataset(noext)
    assert data[len(data) - 1]["key"]
    for i in (-1, -len(data), len(data)):
        with pytest.raises(IndexError):
            data[i]
