"""Feature modules (the Kamailio cut): one package per feature under modules/<name>/.

Each package's `__init__.py` exports `MODULE`, a `ModuleSpec` naming its config section
class, the modules it depends on, its RPC table and its script-facing API module.
"""

from __future__ import annotations

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
