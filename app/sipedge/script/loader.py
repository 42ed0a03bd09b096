"""Loading routing scripts. A script that fails to load is refused with `file:line` and the
caller keeps the previous one."""

from __future__ import annotations

import inspect
import itertools
import os
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ScriptError

_counter = itertools.count(1)


@dataclass(frozen=True)
class Script:
    path: str
    mtime_ns: int
    request_route: Callable[[Any], Any]
    reply_route: Callable[[Any], Any] | None
    is_async: bool
    module: types.ModuleType


def script_mtime(path: str | Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def load_script(path: str | Path, inject: dict[str, Any] | None = None) -> Script:
    """Compile and run a routing script in a fresh module. Raises ScriptError. `inject`
    names go into the module's globals before it runs (the worker's `ksr` namespace)."""
    path = str(path)
    mtime = script_mtime(path)
    try:
        source = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(f"{path}:0", f"cannot read: {exc}") from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        raise ScriptError(f"{path}:{exc.lineno or 0}", f"syntax error: {exc.msg}") from None
    module = types.ModuleType(f"sipedge_route_{next(_counter)}")
    module.__file__ = path
    module.__dict__.update(inject or {})
    try:
        exec(code, module.__dict__)  # noqa: S102 - the operator's own routing script
    except Exception as exc:  # noqa: BLE001 - report any import-time failure with its line
        line = 0
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == path:
                line = frame.lineno or 0
        raise ScriptError(f"{path}:{line}", f"{type(exc).__name__}: {exc}") from None
    request_route = module.__dict__.get("request_route")
    if not callable(request_route):
        raise ScriptError(f"{path}:1", "no request_route(msg) function defined")
    reply_route = module.__dict__.get("reply_route")
    if reply_route is not None and not callable(reply_route):
        raise ScriptError(f"{path}:1", "reply_route is not a function")
    return Script(path, mtime, request_route, reply_route,
                  inspect.iscoroutinefunction(request_route), module)


def error_location(exc: BaseException, path: str) -> str:
    """`file:line` of the deepest frame of `exc` inside the script."""
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path:
            line = frame.lineno or 0
    return f"{path}:{line}"
