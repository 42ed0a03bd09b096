"""Fixture `section_module`: import a params module so that its config section is registered
for one test only (docs/config.md is rendered from the global registry by another test)."""

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
