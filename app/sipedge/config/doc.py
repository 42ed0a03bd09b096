"""Render the config reference (docs/config.md) from the registered sections."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING

from .loader import _ensure_sections
from .schema import SECTIONS

HEADER = """# sipedge configuration reference

One TOML file configures the box; on the appliance it is `sipedge.toml` on the SD card's FAT
boot partition (`/boot/sipedge.toml`). Unknown keys, wrong types and out-of-range values are
errors reported as `file:line: key: what is wrong`, all of them at once; check a file with
`sipedge --check-config FILE` (or `sipedgectl config.check file=FILE` on a running box).

This page is generated from the code (`python -m sipedge.config.doc > docs/config.md`); a test
keeps it in step.

The embedded default configuration (what `make run` uses):

```toml
{default}```
"""


def _type_name(tp: typing.Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"array of {_type_name(item)}"
    if dataclasses.is_dataclass(tp):
        return "table"
    if origin is not None and type(None) in typing.get_args(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return f"{_type_name(inner)} (optional)"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.metadata.get("required"):
        return "required"
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`"


def _table(cls: type, prefix: str, out: list[str], nested: list[tuple[str, type]]) -> None:
    hints = typing.get_type_hints(cls)
    out.append("| key | type | default | description |")
    out.append("|---|---|---|---|")
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        doc = f.metadata.get("doc", "")
        limits = []
        if f.metadata.get("min") is not None:
            limits.append(f"min {f.metadata['min']}")
        if f.metadata.get("max") is not None:
            limits.append(f"max {f.metadata['max']}")
        if f.metadata.get("choices"):
            limits.append("one of " + ", ".join(f"`{c}`" for c in f.metadata["choices"]))
        if f.metadata.get("secret"):
            limits.append("secret: hidden wherever the config is shown")
        if not f.metadata.get("reloadable", True):
            limits.append("restart needed")
        if limits:
            doc = f"{doc} ({'; '.join(limits)})"
        out.append(f"| `{f.name}` | {_type_name(tp)} | {_default(f)} | {doc} |")
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(item):
            nested.append((f"{prefix}.{f.name}", item))


def render_markdown() -> str:
    from .loader import DEFAULT_TOML

    _ensure_sections()
    out = [HEADER.replace("{default}", DEFAULT_TOML), _instances_block()]
    for name in sorted(SECTIONS, key=lambda n: (n not in ("core", "listen", "proxy", "routing"), n)):
        cls, array = SECTIONS[name]
        out.append(f"## `[[{name}]]`" if array else f"## `[{name}]`")
        out.append("")
        if cls.__doc__:
            out.append(cls.__doc__.strip())
            out.append("")
        nested: list[tuple[str, type]] = []
        _table(cls, name, out, nested)
        out.append("")
        while nested:
            path, sub = nested.pop(0)
            out.append(f"### `{path}` entries")
            out.append("")
            if sub.__doc__:
                out.append(sub.__doc__.strip())
                out.append("")
            _table(sub, path, out, nested)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _instances_block() -> str:
    """`[instances.<name>]` (config/instances.py): several proxies in one file."""
    from .instances import box_sections, instance_sections

    own = ", ".join(f"`{n}`" for n in sorted(instance_sections()))
    box = ", ".join(f"`{n}`" for n in sorted(box_sections()))
    return f"""## `[instances.<name>]`

Several proxy instances in one file (docs/instances.md). Without `[instances]` the file is
one proxy, the instance `default`. With it, each `[instances.<name>]` (name: a lower-case
letter, then letters, digits, `-`, `_`) holds what a single proxy has, as sub-tables
(`[instances.pcscf.core]`, `[[instances.pcscf.listen]]`): {own}. The box-wide sections stay
at the top level: {box}. Errors are reported under `instances.<name>.`; two instances may not
bind the same transport/address/port (a wildcard address overlaps its whole family, tcp and
tls share the TCP ports), nor share a control socket or registrar database.

| key | type | default | description |
|---|---|---|---|
| `required` | boolean | `true` | the watchdog is petted only while every required instance is healthy |
| `data_dir` | string | `"/data/sipedge/<name>"` | the instance's data (relative: to the config file); `registrar.db_path` defaults to `<data_dir>/location.sqlite` |

`core.ctl_socket` defaults to `/run/sipedge/<name>/ctl.sock` (`sipedgectl -i <name>`).
"""


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_markdown())
