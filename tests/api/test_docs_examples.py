"""The examples of the API pages (memoized functions, sync code, bulk, freshness) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("bulk.md", "freshness.md", "memoize.md", "sync.md")
BLOCK = re.compile(r"(<!-- not run[^>]*-->\n)?```python\n(.*?)```", re.DOTALL)

EXAMPLES = [
    pytest.param(page, index, code, not_run is not None, id=f"{page}-{index}")
    for page in PAGES
    for index, (not_run, code) in enumerate(
        (match.group(1), match.group(2)) for match in BLOCK.finditer((DOCS / page).read_text())
    )
]


def test_each_page_has_examples() -> None:
    assert {param.values[0] for param in EXAMPLES} == set(PAGES)
    assert len(EXAMPLES) >= 15


@pytest.mark.usefixtures("environment_loop")
@pytest.mark.parametrize(("page", "index", "code", "not_run"), EXAMPLES)
def test_example(page: str, index: int, code: str, not_run: bool) -> None:
    compiled = compile(code, f"docs/{page} example {index}", "exec")
    if not_run:
        return  # needs AWS: compiled only
    exec(compiled, {"__name__": "__main__"})
