"""Shared helpers for module tests.

The module params register config sections on import. Until the loader imports these
modules itself (sections.SECTION_MODULES), the sections are taken out of the global table
again so that other tests (docs/config.md is generated from the table) do not see them;
`module_sections` puts them back for the duration of one test.
"""

from __future__ import annotations

import pytest

from sipedge.config import sections as _core_sections
from sipedge.config.schema import SECTIONS

_BEFORE = dict(SECTIONS)
_PARAMS = ("sipedge.modules.auth.params", "sipedge.modules.registrar.params",
           "sipedge.modules.security.params")
import sipedge.modules.auth.params  # noqa: E402,F401
import sipedge.modules.registrar.params  # noqa: E402,F401
import sipedge.modules.security.params  # noqa: E402,F401

OURS = {k: v for k, v in SECTIONS.items() if k not in _BEFORE}
if not set(_PARAMS) & set(_core_sections.SECTION_MODULES):
    for _name in OURS:
        del SECTIONS[_name]


@pytest.fixture
def module_sections():
    added = {k: v for k, v in OURS.items() if k not in SECTIONS}
    SECTIONS.update(added)
    yield
    for k in added:
        SECTIONS.pop(k, None)
