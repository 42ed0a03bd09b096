"""Editing the operator's TOML as written (tomlkit), and hiding secrets for display.

The console's `config set` changes one value of `sipedge.toml` and keeps every comment, the
order of keys and tables, and the formatting of everything else. Keys are addressed by a dotted
path in which array entries carry an index (0-based), as in the config errors::

    core.server_header        listen[0].port        network.interface[1].addresses
    "my.key".x                (a quoted part may contain dots)

The value is taken as TOML when it is one (`42`, `true`, `"123"`, `'x'`, `[1, 2]`, an inline
table), else as a string: `/dev/ttyS1` needs no quotes, `"123"` stays a string.

Which keys are secrets comes from the schema (`option(..., secret=True)`); `mask_secrets()`
replaces their values with `"<hidden>"` wherever the console or a tool shows a config.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from . import loader as _loader
from .schema import SECTIONS

# tomlkit (about 3 MiB) is imported by the functions that edit or show a file, not with this
# module: the supervisor imports it at start and needs tomlkit only on a console command
if typing.TYPE_CHECKING:
    import tomlkit

HIDDEN = "<hidden>"

KeyPath = list[str | int]

_PART = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_-]+))((?:\[\d+\])*)\s*')


class EditError(ValueError):
    """The key path or the value cannot be used, or the file cannot be parsed."""


def parse_key(dotted: str) -> KeyPath:
    """`listen[0].port` -> ['listen', 0, 'port']; `listen.0.port` is accepted too."""
    parts: KeyPath = []
    pos = 0
    while True:
        m = _PART.match(dotted, pos)
        if not m or m.end() == pos:
            raise EditError(f"{dotted}: not a key path (e.g. core.workers or listen[0].port)")
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if m.group(1) is None and name.isdigit() and parts:
            parts.append(int(name))  # listen.0.port
        else:
            parts.append(name)
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(3)))
        pos = m.end()
        if pos == len(dotted):
            break
        if dotted[pos] != ".":
            raise EditError(f"{dotted}: unexpected {dotted[pos]!r} at position {pos + 1}")
        pos += 1
    if len(parts) < 2 or not isinstance(parts[-1], str):
        raise EditError(f"{dotted}: expected section.key, e.g. core.workers or listen[0].port")
    return parts


def format_key(path: KeyPath) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            name = p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else '"' + p.replace('"', '\\"') + '"'
            out += ("." if out else "") + name
    return out


def parse_value(value: str) -> Any:
    """The TOML item VALUE stands for, kept as written; a plain string if it is not TOML."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    text = value.strip()
    try:
        return tomlkit.parse(f"v = {text}\n")["v"]
    except (TOMLKitError, ValueError):
        return tomlkit.item(text)


def parse_document(text: str) -> tomlkit.TOMLDocument:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise EditError(f"the file is not valid TOML ({exc}); fix it on a PC or use "
                        "`config restore`") from None


def set_value(text: str, dotted: str, value: str) -> str:
    """TOML `text` with `dotted` set to `value`, everything else kept as written."""
    import tomlkit
    from tomlkit.items import Table

    path = parse_key(dotted)
    doc = parse_document(text)
    node: Any = doc
    for i, part in enumerate(path[:-1]):
        here = format_key(path[: i + 1])
        if isinstance(part, int):
            if not isinstance(node, list):
                raise EditError(f"{here}: {format_key(path[:i])} is not an array")
            if part >= len(node):
                raise EditError(f"{here}: {format_key(path[:i])} has {len(node)} entries "
                                f"(0..{len(node) - 1})")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise EditError(f"{here}: {format_key(path[:i])} is not a table")
        if part not in node:
            if isinstance(path[i + 1], int):
                raise EditError(f"{here}: no such array in the file")
            node[part] = (tomlkit.table() if node is doc or isinstance(node, Table)
                          else tomlkit.inline_table())
        node = node[part]
    if not isinstance(node, dict):
        raise EditError(f"{dotted}: {format_key(path[:-1])} is not a table")
    node[path[-1]] = parse_value(value)
    out = tomlkit.dumps(doc)
    return out if out.endswith("\n") or not out else out + "\n"


# ------------------------------------------------------------------ secrets


def _dataclass_of(tp: Any) -> tuple[type | None, bool]:
    """(dataclass, is_list) for a field type such as `list[InterfaceParams]`."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else None
        return (inner, True) if dataclasses.is_dataclass(inner) else (None, True)
    return (tp, False) if dataclasses.is_dataclass(tp) else (None, False)


def _secret_paths(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("secret"):
            out.append(prefix + (f.name,))
        inner, is_list = _dataclass_of(hints.get(f.name))
        if inner is not None:
            out += _secret_paths(inner, prefix + (f.name,) + (("*",) if is_list else ()))
    return out


def secret_keys() -> list[str]:
    """Dotted paths of every secret in the schema (`*`: any entry of an array of tables)."""
    _loader._ensure_sections()
    out: list[tuple[str, ...]] = []
    for name, (cls, array) in SECTIONS.items():
        out += _secret_paths(cls, (name,) + (("*",) if array else ()))
    from .instances import instance_sections

    own = instance_sections()  # and inside every [instances.<name>] (config/instances.py)
    out += [("instances", "*") + p for p in out if p[0] in own]
    return [".".join(p) for p in out]


def _entries(node: Any) -> list[Any]:
    """What `*` stands for: the entries of an array of tables, or the tables of a table
    of tables ([instances.<name>])."""
    if isinstance(node, list):
        return list(node)
    return list(node.values()) if isinstance(node, dict) else []


def _mask(node: Any, path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if head == "*":
        for entry in _entries(node):
            if rest:
                _mask(entry, rest)
        return
    if not isinstance(node, dict) or head not in node:
        return
    if not rest:
        value = node[head]
        if isinstance(value, str) and value:
            node[head] = HIDDEN
        return
    _mask(node[head], rest)


def mask_secrets(text: str) -> str:
    """`text` with every schema secret's value replaced by `"<hidden>"` (format kept).

    A file that is not valid TOML is masked line by line: any line whose key is the name of
    a secret loses its value.
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    keys = secret_keys()
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError:
        names = sorted({k.rsplit(".", 1)[-1] for k in keys})
        pat = re.compile(rf"(?m)^(\s*(?:[\w.\"-]*\.)?\"?(?:{'|'.join(names)})\"?\s*=\s*).*$")
        return pat.sub(rf'\1"{HIDDEN}"', text)
    for k in keys:
        _mask(doc, k.split("."))
    return tomlkit.dumps(doc)


def secret_values(text: str) -> list[str]:
    """The secret values present in `text` (for tests and for a changed-secret note)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError:
        return []
    found: list[str] = []

    def walk(node: Any, path: list[str]) -> None:
        head, rest = path[0], path[1:]
        if head == "*":
            for entry in _entries(node):
                if rest:
                    walk(entry, rest)
            return
        if isinstance(node, dict) and head in node:
            if rest:
                walk(node[head], rest)
            elif isinstance(node[head], str) and node[head]:
                found.append(str(node[head]))

    for k in secret_keys():
        walk(doc, k.split("."))
    return found
