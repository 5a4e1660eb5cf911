"""`sapiens2_cli.extract` from Python: the CLI's spellings, refusals of wrong values, progress."""

from __future__ import annotations

import io
import itertools

import pytest
from paths import TINY, copy_photos

import sapiens2_cli
from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.output import open_features


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"size": (64,)}, "--size (64,) is not (H, W)"),
        ({"size": (64.0, 48.0)}, "--size (64.0, 48.0) is not (H, W)"),
        ({"size": "64x48x3"}, "--size '64x48x3' is not HxW"),
        ({"layers": "8,,-1"}, "--layers '8,,-1' is not a list of block indices"),
        ({"layers": 8.0}, "--layers 8.0 is not block indices"),
        ({"layers": ()}, "--layers is empty"),
        ({"batch_size": "many"}, "--batch-size 'many' is neither"),
        ({"batch_size": 2.0}, "--batch-size 2.0 is neither"),
        ({"workers": "2"}, "--workers must be a whole number"),
        ({"fps": 0}, "--fps 0 must be a positive number"),
        ({"stdin": io.StringIO("a.jpg\n")}, "stdin is a text stream"),
        ({"video_fps": 2.0}, "extract() has no option 'video_fps'"),
    ],
)
def test_wrong_python_values_are_one_line_errors_before_any_work(tmp_path, given, message):
    """Catches: a value of the wrong type (or the CLI's old keyword) reaching deep code and
    failing there with a TypeError, or silently meaning something else."""
    out = tmp_path / "f.h5"
    with pytest.raises(Sapiens2Error) as error:
        sapiens2_cli.extract(["-"], out, checkpoint=TINY, **given)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_python_takes_the_command_lines_spellings_and_one_path(tmp_path):
    """Catches: size="64x48", layers="8,-1", layers=8, batch_size="auto" or a single path
    (a string is a sequence of characters) refused or misread."""
    src = copy_photos(tmp_path / "in", {"a.jpg": "coffee.jpg"})
    text = sapiens2_cli.extract(
        str(src), tmp_path / "text.h5", checkpoint=TINY, size="64x48", layers="8,-1",
        batch_size="auto", workers=0, precision="fp32",
    )  # fmt: skip
    one = sapiens2_cli.extract(src, tmp_path / "one.h5", checkpoint=TINY, size=[64, 48], layers=8)
    assert (text.images, one.images) == (1, 1)
    with open_features(tmp_path / "text.h5") as f:
        assert (f.settings["image_size"], f.settings["layers"]) == ([64, 48], [8, 17])
        assert f.paths == [str(src / "a.jpg")]
    with open_features(tmp_path / "one.h5") as f:
        assert f.settings["layers"] == [8]


def test_a_progress_function_gets_each_batch_and_the_totals(tmp_path):
    """Catches: a progress function given only increments, with no total to draw a bar."""
    src = copy_photos(tmp_path / "in", ["astronaut.png", "chelsea.jpg", "coffee.jpg"])
    (src / "broken.jpg").write_text("not a picture")
    steps = []
    sapiens2_cli.extract(
        src, tmp_path / "f.h5", checkpoint=TINY, size=(64, 48), workers=0, batch_size=2,
        progress=steps.append,
    )  # fmt: skip
    counts = [(s.rows, s.failed, s.done, s.total) for s in steps]
    assert sum(c[0] for c in counts) == 3 and sum(c[1] for c in counts) == 1
    assert [c[2] for c in counts] == list(itertools.accumulate(c[0] + c[1] for c in counts))
    assert {c[3] for c in counts} == {4} and counts[-1][2] == 4
