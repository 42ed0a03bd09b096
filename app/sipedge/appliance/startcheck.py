"""Start-time checks of a candidate config: what `--check-config` cannot know because it
depends on the box right now. A listener whose port another program holds, or a data path on
a read-only or missing directory, passes the schema and the script check and then fails the
proxy's start; `config check` and `config set` report it first, with file:line.

Ports and paths the running proxy already uses are not reported: the candidate replaces it.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

from ..config.loader import ConfigIssue, _line_for, line_map

WILDCARDS = ("0.0.0.0", "::", "")


def _holds(running: Any, proto: str, address: str, port: int) -> bool:
    """Whether the running proxy's listeners already cover this one (it gives them up when
    the candidate replaces it). A wildcard on either side covers the other."""
    if running is None:
        return False
    for inst in _instances(running):
        for lp in inst.listen:
            if lp.proto == proto and lp.port == port and (
                    lp.address == address or lp.address in WILDCARDS or address in WILDCARDS):
                return True
    return False


def _instances(config: Any) -> list[Any]:
    """The proxy instances of a config ([instances.<name>], or the config itself)."""
    return list(getattr(config, "instances", {"default": config}).values())


def _bind_problem(proto: str, address: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy does
            s.bind((address, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"{proto} {address}:{port} is already in use by another program"
        if exc.errno == errno.EACCES:
            return f"{proto} {address}:{port}: permission denied"
        # EADDRNOTAVAIL and the like: the address may come with the network (DHCP, a VLAN
        # the same apply creates); the proxy learns addresses late, so no error here
    return None


def _writable_dir(path: Path) -> str | None:
    """None when the proxy can create `path`'s directory (or it is there and writable)."""
    d = path.parent
    while not d.exists():
        if d.parent == d:
            break
        d = d.parent
    if not d.is_dir():
        return f"{d} is not a directory"
    if not os.access(d, os.W_OK | os.X_OK):
        try:
            ro = os.statvfs(d).f_flag & os.ST_RDONLY
        except OSError:
            ro = 0
        return f"{d} is on a read-only file system" if ro else f"{d} is not writable"
    return None


def data_paths(config: Any) -> list[tuple[str, str]]:
    """(key path, file) for every file the proxy writes."""
    paths = [("core.ctl_socket", config.core.ctl_socket)]
    if "registrar" in config.core.modules:
        reg = config.registrar
        if getattr(reg, "storage", "db") != "memory" and reg.db_path:
            paths.append(("registrar.db_path", reg.db_path))
    return paths


def start_problems(config: Any, running: Any = None) -> list[ConfigIssue]:
    """Problems the proxies would hit at start with `config` on this box now (every
    instance of it; keys named as in the file, `instances.<name>.listen[0].port`)."""
    lines = line_map(config.text)
    issues: list[ConfigIssue] = []

    def issue(path: str, reason: str) -> None:
        issues.append(ConfigIssue(config.source, _line_for(lines, path), path, reason))

    held = {p for inst in _instances(running) for _k, p in data_paths(inst)} \
        if running is not None else set()
    seen: set[tuple[str, str, int]] = set()
    for inst in _instances(config):
        prefix = "" if inst is config else f"instances.{inst.instance_name}."
        for i, lp in enumerate(inst.listen):
            proto = "tcp" if lp.proto in ("tcp", "tls") else "udp"
            key = (proto, lp.address, lp.port)
            if key in seen or _holds(running, lp.proto, lp.address, lp.port):
                continue
            seen.add(key)
            problem = _bind_problem(proto, lp.address, lp.port)
            if problem:
                issue(f"{prefix}listen[{i}].port", problem)
        for key, value in data_paths(inst):
            if value in held:
                continue
            problem = _writable_dir(Path(value))
            if problem:
                issue(prefix + key, f"{value}: {problem}")
    return issues
