"""The shipped routing scripts are clean for pyflakes (what ruff's F rules check): `ksr`
comes from `from sipedge.script import ksr`, no `# noqa: F821` (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[3] / "app" / "sipedge" / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_pyflakes_clean(path):
    api = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter

    class Collect:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines.append(text)

    out = Collect()
    n = api.check(path.read_text(), str(path), Reporter(out, out))
    assert n == 0, "".join(out.lines)
    assert "noqa: F821" not in path.read_text()
