"""The code examples in docs/, found and run one way, so a test reads only what it checks.

docs/format.md tells its examples apart by the fence's language tag (`python`, `python3`,
`py`); docs/api.md by the section they stand in.
"""

from __future__ import annotations

import re

from paths import DOCS

FENCE = re.compile(r"^```(\S*)\n(.*?)^```", re.S | re.M)


def examples(doc: str, language: str, section: str | None = None) -> list[str]:
    """The code of docs/DOC's blocks fenced as `language`, in order; only those under the
    `## SECTION` heading if given."""
    text = (DOCS / doc).read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [code for tag, code in FENCE.findall(text) if tag == language]


def run_example(code: str, doc: str) -> dict:
    """Run `code` as a script of its own (tracebacks name the doc); its globals after."""
    scope: dict = {}
    exec(compile(code, f"docs/{doc}", "exec"), scope)
    return scope
