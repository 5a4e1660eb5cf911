"""The runnable example in docs/api.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).parents[1] / "docs" / "api.md"


def test_api_example_runs(monkeypatch, capsys):
    example = re.search(r"## Example\s+```python\n(.*?)```", DOC.read_text(), re.S)[1]
    monkeypatch.chdir(DOC.parents[1])
    exec(compile(example, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "custom size" in out and "torch.Size([2, 32, 4, 3])" in out
