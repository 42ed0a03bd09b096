"""`from sipedge.script import ksr`: the routing script's module namespace by import, as
Kamailio's KEMI scripts `import KSR`. Linters and editors see a real name, so scripts need
no `# noqa: F821`.

`ksr` is a handle: the worker binds it to its namespace of loaded modules (`ksr.auth`,
`ksr.uac`, ...) when the modules have started, before any script runs. The name injected
into the script's globals (the older way) is that same namespace, so both spellings work
and a script may use either. Outside a worker (config check, `--check-config`) the handle
is bound to an empty namespace: touching `ksr.<module>` at import time fails as before.
"""

from __future__ import annotations

from typing import Any


class _Unbound:
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"ksr.{name}: no modules are loaded here (only in a worker)")


class KsrHandle:
    """What `from sipedge.script import ksr` gives: attribute access goes to the
    namespace the worker bound."""

    __slots__ = ()
    _target: Any = _Unbound()

    def __getattribute__(self, name: str) -> Any:
        # every attribute is the target's: no failed lookup on the handle first (a
        # `__getattr__` would only run after one, an AttributeError per `ksr.<module>`)
        return getattr(KsrHandle._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ksr is read-only")

    def __dir__(self):
        return dir(KsrHandle._target)

    def __repr__(self) -> str:
        return f"<ksr {KsrHandle._target!r}>"


ksr = KsrHandle()


def bind(namespace: Any) -> None:
    """Called by the worker once its modules have started (io/modules.py)."""
    KsrHandle._target = namespace


__all__ = ["KsrHandle", "bind", "ksr"]
