"""`from sipedge.script import ksr` (script/ksr.py): the worker binds the handle; the
injected global keeps working; before binding, module access fails clearly."""

from __future__ import annotations

import pytest

from sipedge.script import ksr as handle
from sipedge.script import ksr as ksr_module_attr
from sipedge.script import load_script
from sipedge.script.ksr import KsrHandle, _Unbound, bind


class Namespace:
    def __init__(self, **mods):
        self.__dict__.update(mods)


@pytest.fixture
def restore():
    old = KsrHandle._target
    yield
    KsrHandle._target = old


def test_imported_and_injected_ksr_are_the_same_namespace(tmp_path, restore):
    script = tmp_path / "route.py"
    script.write_text("from sipedge.script import ksr\n\n\n"
                      "def request_route(msg):\n    return ksr.uac.name\n")
    old = tmp_path / "old.py"
    old.write_text("def request_route(msg):\n    return ksr.uac.name  # noqa: F821\n")
    ns = Namespace(uac=Namespace(name="uac-facade"))
    bind(ns)
    assert load_script(script, {"ksr": ns}).request_route(None) == "uac-facade"
    assert load_script(old, {"ksr": ns}).request_route(None) == "uac-facade"
    assert handle is ksr_module_attr and "uac" in dir(handle)


def test_unbound_and_read_only(restore):
    KsrHandle._target = _Unbound()  # as before any worker bound it (other tests may have)
    with pytest.raises(AttributeError, match="only in a worker"):
        handle.uac  # noqa: B018
    with pytest.raises(AttributeError, match="read-only"):
        handle.uac = 1
