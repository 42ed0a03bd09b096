"""Feature modules (the Kamailio cut): one package per feature under modules/<name>/.

Each package's `__init__.py` exports `MODULE`, a `ModuleSpec` naming its config section
class, the modules it depends on, its RPC table and its script-facing API module.

A package imports nothing when it is imported (`lazy_package`): the config loader imports
every module's `params` (to know every section), which runs every package's `__init__.py`,
in the supervisor as in the proxy. `MODULE` and the names a package re-exports are imported
on first access. Before, that loaded every module's core and RPC, with h11, dnspython,
sqlite3 and the Diameter dictionary, into both processes (issue 13: memory and boot time).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class ModuleSpec:
    name: str  # module, config section, logger suffix and RPC namespace
    params: type  # the frozen dataclass of the config section
    depends: tuple[str, ...] = ()
    rpc: dict[str, Callable[..., Any]] = field(default_factory=dict)
    script_api: str = ""  # dotted name of the script-facing module (api.py)


@dataclass(frozen=True)
class ReplySpec:
    """A reply a module asks the script to send: `msg.reply(spec.status, spec.reason,
    spec.headers)`. Headers are (name, value) pairs; a name may repeat (WWW-Authenticate)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    def __iter__(self):
        """`msg.reply(*spec)` / `msg.t_reply(*spec)`."""
        return iter((self.status, self.reason, self.headers))


def lazy_package(package: str, exports: dict[str, str],
                 spec: Callable[[], ModuleSpec]) -> Callable[[str], Any]:
    """The module `__getattr__` (PEP 562) of a feature package: `MODULE` is `spec()`, a name
    of `exports` (name -> submodule, relative to the package) is imported from it; each is
    then kept as a plain attribute."""

    def __getattr__(name: str) -> Any:
        if name == "MODULE":
            value = spec()
        elif name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
