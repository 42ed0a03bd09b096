"""docs/config.md is generated from the config schema: keep it in step."""

from pathlib import Path

from sipedge.config.doc import render_markdown


def test_config_reference_is_up_to_date():
    doc = Path(__file__).parents[2] / "docs" / "config.md"
    assert doc.read_text() == render_markdown(), (
        "docs/config.md is stale: run `.venv/bin/python -m sipedge.config.doc > docs/config.md`")
