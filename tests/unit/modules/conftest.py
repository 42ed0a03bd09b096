"""Fixture `section_module`: import or reload a params module without changing, after the
test, the global section table (docs/config.md is rendered from it by another test)."""

from __future__ import annotations

import importlib
import sys

import pytest

from sipedge.config import loader, schema


@pytest.fixture
def section_module():
    loader._ensure_sections()  # the core and appliance sections first, so they stay
    saved = dict(schema.SECTIONS)

    def load(name: str):
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)

    yield load
    schema.SECTIONS.clear()
    schema.SECTIONS.update(saved)
