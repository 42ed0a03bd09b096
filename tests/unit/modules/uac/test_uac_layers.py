"""The uac logic is L1 sans-IO: only aio.py (and api.py, which starts tasks) touch asyncio."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_module_layers import FORBIDDEN, imported  # noqa: F401 - shared helper

UAC = Path(__file__).parents[4] / "app" / "sipedge" / "modules" / "uac"
CORE = ["digest.py", "core.py", "cseq.py", "registration.py", "params.py", "rpc.py"]


@pytest.mark.parametrize("name", CORE)
def test_uac_core_files_are_sans_io(name):
    names = imported(UAC / name)
    bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN
                 or n.startswith(("sipedge.io", "sipedge.appliance", "sipedge.app")))
    assert not bad, f"{name} imports {bad}"
