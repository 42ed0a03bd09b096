"""Config sections as frozen dataclasses, and the registry the loader reads.

A section is declared once, with its defaults, limits and doc strings::

    @section("watchdog")
    @dataclass(frozen=True)
    class WatchdogParams:
        \"\"\"Hardware watchdog.\"\"\"
        timeout_s: int = option(15, "hardware timeout in seconds", min=1, max=600)

The loader (`sipedge.config.loader`) validates a TOML document against the registered
sections, and `docs/config.md` is checked against the same table by a test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field
from typing import Any, Callable

# name -> (dataclass, is_array_of_tables)
SECTIONS: dict[str, tuple[type, bool]] = {}


def section(name: str, *, array: bool = False) -> Callable[[type], type]:
    """Register a frozen dataclass as the top-level TOML table `name`.

    `array=True` makes it an array of tables (`[[name]]`), read as a tuple.
    """

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        SECTIONS[name] = (cls, array)
        return cls

    return register


def option(
    default: Any = MISSING,
    doc: str = "",
    *,
    min: float | None = None,  # noqa: A002 - mirrors the config vocabulary
    max: float | None = None,  # noqa: A002
    choices: tuple[Any, ...] | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
    required: bool = False,
    secret: bool = False,
    reloadable: bool = True,
) -> Any:
    """A documented field. `required=True` means the key must be present in the file."""
    meta = {
        "doc": doc,
        "min": min,
        "max": max,
        "choices": choices,
        "required": required,
        "secret": secret,
        "reloadable": reloadable,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    if default is MISSING and not required:
        raise TypeError("option() needs a default unless required=True")
    return field(default=default, metadata=meta)
