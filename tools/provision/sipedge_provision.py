"""Fleet provisioning: one validated sipedge.toml per box from an inventory and a Jinja2 template.

Used by the `provision` command next to this file (see docs/provisioning.md) and by the tests.

- `load_inventory(path)`: an Ansible-style inventory (TOML or YAML): groups with `vars`, `hosts`
  and `children`; each host's variables are merged all < groups (by depth, then name) < host.
- `Renderer.render(host)`: the template rendered with the host's variables, a map from each
  rendered line to the template line it came from, and validation by the proxy's own loader
  (`sipedge.config.loader.load_text`: the same file:line errors as on the box).
- Secrets (inventory variables named like passwords or keys, or listed in `secret_vars`, and
  every config key the schema marks secret) are replaced by `***` in everything printed.
- Delivery: `write_renders` (all or nothing), `diff_configs`, `write_image` (mtools into the FAT
  partition of an image copy), `write_card`, `Pusher` (the box's serial console,
  `config import -`).
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
import tomllib
import tty
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
try:
    import sipedge  # noqa: F401
except ImportError:  # run from a checkout without the app installed
    sys.path.insert(0, str(REPO / "app"))

try:
    import jinja2
    import tomlkit
except ImportError as _exc:  # host dependencies: docs/provisioning.md
    sys.exit(f"provision: needs {_exc.name} (Debian: apt install python3-jinja2 python3-tomlkit "
             "python3-yaml mtools; pip: jinja2 tomlkit pyyaml)")

from sipedge.config import loader as config_loader
from sipedge.errors import ConfigError

STATE_FILE = ".provision.json"
MASK = "***"
SECRET_NAME = re.compile(r"(^|_)(password|passwd|passphrase|secret|token|psk|key|ha1)(_|$)",
                         re.IGNORECASE)


class ProvisionError(Exception):
    """Something the operator must fix; the message is safe to print (secrets masked)."""


# ---------------------------------------------------------------------------- inventory


@dataclasses.dataclass
class Host:
    name: str
    groups: list[str]
    vars: dict[str, Any]
    secrets: set[str]  # secret string values (as given and as escaped in TOML strings)


def _read_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ProvisionError(f"{where}: {getattr(exc, 'problem', exc)}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProvisionError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ProvisionError(f"{path}: expected a table of groups at the top")
    return data


def load_inventory(path: str | os.PathLike) -> dict[str, Host]:
    """Hosts of an Ansible-style inventory, in file order, with merged variables."""
    path = Path(path)
    data = _read_data(path)
    top = data.get("all") or {}
    if not isinstance(top, dict):
        raise ProvisionError(f"{path}: all: expected a table")
    # groups may also sit at the top level, next to (or instead of) all.children
    root = {**top, "children": {**(top.get("children") or {}),
                                **{k: v for k, v in data.items() if k != "all"}}}
    order: list[str] = []
    layers: dict[str, list[tuple[int, str, dict]]] = {}  # host -> [(depth, group, vars)]
    groups: dict[str, set[str]] = {}
    host_vars: dict[str, dict] = {}

    def walk(name: str, node: Any, depth: int, chain: list[str]) -> None:
        where = "/".join(chain + [name])
        if node is None:
            node = {}
        if not isinstance(node, dict):
            raise ProvisionError(f"{path}: group {where}: expected a table")
        unknown = set(node) - {"vars", "hosts", "children"}
        if unknown:
            raise ProvisionError(f"{path}: group {where}: unknown key(s) {', '.join(sorted(unknown))} "
                                 "(a group has vars, hosts and children)")
        gvars = node.get("vars") or {}
        hosts = node.get("hosts") or {}
        if isinstance(hosts, list):
            hosts = {h: None for h in hosts}
        if not isinstance(gvars, dict) or not isinstance(hosts, dict):
            raise ProvisionError(f"{path}: group {where}: vars and hosts must be tables")
        members = groups.setdefault(name, set())
        for hname, hv in hosts.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(hname)):
                raise ProvisionError(f"{path}: host {hname!r}: use letters, digits, '.', '_', '-'")
            if hv is not None and not isinstance(hv, dict):
                raise ProvisionError(f"{path}: host {hname}: expected a table of variables")
            if hname not in layers:
                order.append(hname)
                layers[hname] = []
                host_vars[hname] = {}
            host_vars[hname].update(hv or {})
            members.add(hname)
        for child, cnode in (node.get("children") or {}).items():
            walk(child, cnode, depth + 1, chain + [name])
            members |= groups[child]
        for hname in members:
            layers[hname].append((depth, name, gvars))

    walk("all", root, 0, [])
    if not order:
        raise ProvisionError(f"{path}: no hosts")
    group_hosts = {g: sorted(h, key=order.index) for g, h in groups.items()}
    result = {}
    for hname in order:
        merged: dict[str, Any] = {}
        secret_names: set[str] = set()
        for _depth, _g, gvars in sorted(layers[hname], key=lambda t: (t[0], t[1])):
            merged.update(gvars)
            secret_names |= set(gvars.get("secret_vars") or [])
        merged.update(host_vars[hname])
        secret_names |= set(host_vars[hname].get("secret_vars") or [])
        merged.setdefault("hostname", hname)
        merged["inventory_hostname"] = hname
        merged["group_names"] = sorted(g for g in groups if g != "all" and hname in groups[g])
        merged["groups"] = group_hosts
        secrets: set[str] = set()
        for key, value in merged.items():
            if key in secret_names or SECRET_NAME.search(key):
                secrets |= _secret_strings(value)
        result[hname] = Host(hname, merged["group_names"], merged, secrets)
    return result


def _secret_strings(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_secret_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_secret_strings(v) for v in value)) if value else set()
    if isinstance(value, bool) or value is None:
        return set()
    text = str(value)
    if not text:
        return set()
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]  # as in a TOML basic string
    return {text, escaped}


def mask(text: str, secrets: Iterable[str]) -> str:
    for s in sorted(set(secrets), key=len, reverse=True):
        if s:
            text = text.replace(s, MASK)
    return text


# ---------------------------------------------------------------------------- rendering


def toml_value(value: Any) -> str:
    """Jinja filter `toml`: any value as a TOML literal (strings quoted and escaped)."""
    if isinstance(value, jinja2.Undefined):
        value = str(value)  # raises for StrictUndefined
    return tomlkit.item(value).as_string()


@dataclasses.dataclass
class Render:
    host: str
    text: str = ""
    line_origin: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    secrets: set[str] = dataclasses.field(default_factory=set)
    secret_paths: set[str] = dataclasses.field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.errors


def _innermost_frame(gen: Any) -> Any:
    """The frame that produced the last chunk: follow `yield from` (blocks) down."""
    while getattr(gen, "gi_yieldfrom", None) is not None and hasattr(gen.gi_yieldfrom, "gi_frame"):
        gen = gen.gi_yieldfrom
    return gen.gi_frame


class _TrackedTemplate(jinja2.Template):
    """Records, for every chunk of output, the template frame that produced it, also through
    `{% include %}` (which loops over the included template's generator)."""

    @classmethod
    def _from_namespace(cls, environment, namespace, globals):  # noqa: A002 - Jinja's name
        t = super()._from_namespace(environment, namespace, globals)
        render = t.root_render_func

        def root(context):
            where = environment.provision_where  # [sequence number, frame]
            gen = render(context)
            while True:
                before = where[0]
                try:
                    chunk = next(gen)
                except StopIteration:
                    return
                if where[0] == before:  # no included template claimed this chunk
                    where[0] += 1
                    where[1] = _innermost_frame(gen)
                yield chunk

        t.root_render_func = root
        return t


class Renderer:
    def __init__(self, template: str | os.PathLike, output_dir: str | os.PathLike) -> None:
        self.template_path = Path(template)
        if not self.template_path.is_file():
            raise ProvisionError(f"{self.template_path}: no such template")
        self.output_dir = Path(output_dir)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.template_path.parent)),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, autoescape=False)
        self.env.template_class = _TrackedTemplate
        self.env.provision_where = [0, None]
        self.env.filters["toml"] = toml_value
        self._raw: dict[str, tuple[str, list[str]]] = {}  # filename -> (source, code lines)
        try:
            self.template = self.env.get_template(self.template_path.name)
        except jinja2.TemplateSyntaxError as exc:
            raise ProvisionError(f"{exc.filename or self.template_path}:{exc.lineno}: "
                                 f"template syntax: {exc.message}") from None

    def output_path(self, host: str) -> Path:
        return self.output_dir / host / "sipedge.toml"

    def _sources(self, tmpl: jinja2.Template) -> tuple[str, list[str]]:
        key = tmpl.filename or tmpl.name or ""
        if key not in self._raw:
            source, filename, _ = self.env.loader.get_source(self.env, tmpl.name)
            code = self.env.compile(source, tmpl.name, filename, raw=True)
            self._raw[key] = (source, code.splitlines())
        return self._raw[key]

    def _chunks(self, variables: dict) -> Iterable[tuple[str, str, int, bool]]:
        """(text, template file, template line, is_literal) for each piece of output."""
        gen = self.template.root_render_func(self.template.new_context(variables))
        for chunk in gen:
            frame = self.env.provision_where[1]
            tmpl = frame.f_globals.get("__jinja_template__") if frame else None
            if tmpl is None:
                yield chunk, str(self.template_path), 0, False
                continue
            line = tmpl.get_corresponding_lineno(frame.f_lineno)
            source, code = self._sources(tmpl)
            code_line = code[frame.f_lineno - 1].strip() if frame.f_lineno <= len(code) else ""
            literal = code_line.startswith(("yield '", 'yield "'))
            if literal and chunk:
                start = sum(len(x) + 1 for x in source.split("\n")[:max(0, line - 1)])
                pos = source.find(chunk, start)
                if pos >= 0:
                    line = source.count("\n", 0, pos) + 1
            yield chunk, tmpl.filename or tmpl.name, line, literal

    def render(self, host: Host) -> Render:
        r = Render(host.name, secrets=set(host.secrets))
        out: list[str] = []
        origins: list[tuple[str, int]] = []  # per output line: (file, line)
        cur_line_best: tuple[str, int] | None = None
        cur_line_expr: tuple[str, int] | None = None
        try:
            for chunk, tfile, tline, literal in self._chunks(host.vars):
                for i, piece in enumerate(chunk.split("\n")):
                    if i > 0:
                        origins.append(cur_line_expr or cur_line_best or (tfile, tline))
                        cur_line_best = cur_line_expr = None
                        if literal:
                            tline += 1
                    if piece.strip():
                        if literal and cur_line_best is None:
                            cur_line_best = (tfile, tline)
                        elif not literal:
                            cur_line_expr = (tfile, tline)
                out.append(chunk)
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
                AttributeError) as exc:  # the template's own expressions failed
            r.errors.append(f"{host.name}: {self._template_location(exc)}: "
                            f"{mask(str(exc), r.secrets)}")
            return r
        r.text = "".join(out)
        if r.text and not r.text.endswith("\n"):
            r.text += "\n"
        origins.append(cur_line_expr or cur_line_best or (str(self.template_path), 0))
        r.line_origin = origins
        source = str(self.output_path(host.name))
        try:
            config = config_loader.load_text(r.text, source)
        except ConfigError as exc:
            lines = r.text.splitlines()
            for issue in exc.errors:
                where = ""
                if 1 <= issue.line <= len(origins):
                    tfile, tline = origins[issue.line - 1]
                    where = f" (template {self._short(tfile)}:{tline})"
                msg = f"{host.name}: {issue}{where}"
                if 1 <= issue.line <= len(lines):
                    excerpt = mask_toml_lines([lines[issue.line - 1]], r.secrets)[0]
                    msg += f"\n    {issue.line} | {excerpt}"
                r.errors.append(mask(msg, r.secrets))
            return r
        r.secrets |= _schema_secrets(config)
        r.secret_paths = {p for p, v in flatten(tomllib.loads(r.text)).items()
                          if mask(v, r.secrets) != v} | _schema_secret_paths(config)
        return r

    def _short(self, filename: str) -> str:
        try:
            return str(Path(filename).resolve().relative_to(Path.cwd()))
        except ValueError:
            return filename

    def _template_location(self, exc: Exception) -> str:
        if isinstance(exc, jinja2.TemplateSyntaxError):
            return f"{self._short(exc.filename or str(self.template_path))}:{exc.lineno}"
        where = None
        tb = exc.__traceback__
        while tb is not None:  # the innermost template frame (render functions are not rewritten)
            tmpl = tb.tb_frame.f_globals.get("__jinja_template__")
            if tmpl is not None:
                where = f"{self._short(tmpl.filename or tmpl.name)}:" \
                        f"{tmpl.get_corresponding_lineno(tb.tb_lineno)}"
            tb = tb.tb_next
        if where:
            return where
        return self._short(str(self.template_path))


def _walk_secret_fields(obj: Any, path: str) -> Iterable[tuple[str, Any]]:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            sub = f"{path}.{f.name}" if path else f.name
            if f.metadata.get("secret"):
                yield sub, value
            else:
                yield from _walk_secret_fields(value, sub)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _walk_secret_fields(item, f"{path}[{i}]")


def _schema_config_items(config: Any) -> Iterable[tuple[str, Any]]:
    for name, value in config.sections().items():
        yield from _walk_secret_fields(value, name)


def _schema_secrets(config: Any) -> set[str]:
    found: set[str] = set()
    for _path, value in _schema_config_items(config):
        found |= _secret_strings(value)
    return found


def _schema_secret_paths(config: Any) -> set[str]:
    return {path for path, value in _schema_config_items(config) if value not in ("", None)}


@functools.cache
def _schema_secret_leaves() -> frozenset[str]:
    """Names of the config keys the schema marks secret (password_hash, secret, ...)."""
    from sipedge.config.schema import SECTIONS

    config_loader._ensure_sections()
    leaves: set[str] = set()

    def walk(cls: type) -> None:
        for f in dataclasses.fields(cls):
            if f.metadata.get("secret"):
                leaves.add(f.name)
            for arg in getattr(f.type, "__args__", ()) if not isinstance(f.type, str) else ():
                if dataclasses.is_dataclass(arg):
                    walk(arg)

    for cls, _array in SECTIONS.values():
        walk(cls)
    return frozenset(leaves)


def secret_key(path: str) -> bool:
    """Whether a dotted config path names a secret by its key alone (for values whose secret
    is not known here, e.g. the old value in a diff)."""
    leaf = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
    return leaf in _schema_secret_leaves() or bool(SECRET_NAME.search(leaf))


INLINE_SECRET = re.compile(r"(?i)\b((?:\w*_)?(?:password|passwd|secret|token|psk|key|ha1))=([^;,&\s\"']+)")


def mask_toml_lines(lines: Iterable[str], secrets: Iterable[str],
                    secret_keys: Iterable[str] = ()) -> list[str]:
    """Lines of TOML (or of a unified diff of TOML): known secrets, the value of every key that
    names a secret (or is in `secret_keys`: keys that held a secret in the new render), and
    `password=...` style attributes inside values become ***."""
    keys = set(secret_keys)
    out = []
    for line in lines:
        m = re.match(r"^([-+ ]?\s*)([A-Za-z0-9_.\"-]+)(\s*=\s*)(.*)$", line)
        if m and m.group(4).strip():
            key = m.group(2).replace('"', "")
            if secret_key(key) or key.rsplit(".", 1)[-1] in keys:
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}"
        line = INLINE_SECRET.sub(lambda mm: f"{mm.group(1)}={MASK}", line)
        out.append(mask(line, secrets))
    return out


def flatten(data: Any, path: str = "") -> dict[str, str]:
    """Dotted paths (`listen[1].port`, the loader's notation) -> TOML literal of the value."""
    out: dict[str, str] = {}
    if isinstance(data, dict) and (data or not path):
        for k, v in data.items():
            out.update(flatten(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{path}[{i}]"))
    else:
        out[path] = tomlkit.item(data).as_string() if not isinstance(data, dict) else "{}"
    return out


def render_all(inventory: dict[str, Host], renderer: Renderer,
               limit: Iterable[str] | None = None) -> list[Render]:
    names = select_hosts(inventory, limit)
    return [renderer.render(inventory[n]) for n in names]


def select_hosts(inventory: dict[str, Host], limit: Iterable[str] | None) -> list[str]:
    if not limit:
        return list(inventory)
    wanted = []
    for item in limit:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            groups = {g for h in inventory.values() for g in h.groups}
            if name in inventory:
                wanted.append(name)
            elif name in groups:
                wanted += [h for h in inventory if name in inventory[h].groups]
            else:
                raise ProvisionError(f"no host or group {name!r} in the inventory")
    return list(dict.fromkeys(wanted))


# ---------------------------------------------------------------------------- state, writing


def read_state(output_dir: Path) -> dict:
    try:
        return json.loads((output_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_renders(renders: list[Render], renderer: Renderer) -> list[tuple[str, Path, str, str]]:
    """Write every render, or none when any has errors. Returns (host, path, sha256, status)."""
    if any(not r.ok for r in renders):
        raise ProvisionError("\n".join(e for r in renders for e in r.errors)
                             + f"\nnothing written ({sum(not r.ok for r in renders)} of "
                             f"{len(renders)} hosts have errors)")
    state = read_state(renderer.output_dir)
    done = []
    for r in renders:
        path = renderer.output_path(r.host)
        data = r.text.encode()
        old = path.read_bytes() if path.exists() else None
        _atomic_write(path, data)
        sha = hashlib.sha256(data).hexdigest()
        status = "new" if old is None else "unchanged" if old == data else "changed"
        state[r.host] = {"sha256": sha, "template": str(renderer.template_path),
                         "secret_paths": sorted(r.secret_paths),
                         "rendered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        done.append((r.host, path, sha, status))
    _atomic_write(renderer.output_dir / STATE_FILE,
                  (json.dumps(state, indent=1, sort_keys=True) + "\n").encode(), 0o644)
    return done


def diff_configs(old_text: str | None, r: Render, old_secret_paths: Iterable[str] = ()) -> list[str]:
    """Key-by-key changes from the last render to this one, secrets as ***."""
    if old_text is None:
        return ["(never rendered: the whole file is new)"]
    try:
        old = flatten(tomlkit.parse(old_text).unwrap())
    except tomlkit.exceptions.TOMLKitError as exc:
        return [f"(the old file is not TOML: {exc})"]
    try:
        new = flatten(tomlkit.parse(r.text).unwrap())
    except tomlkit.exceptions.TOMLKitError:  # tomllib (the loader) took it: compare with that
        new = flatten(tomllib.loads(r.text))
    hidden = set(r.secret_paths) | set(old_secret_paths)

    def show(path: str, value: str) -> str:
        if path in hidden or secret_key(path):
            return MASK
        return mask(INLINE_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", value), r.secrets)

    lines = []
    for path in list(old) + [p for p in new if p not in old]:
        if path not in new:
            lines.append(f"- {path} = {show(path, old[path])}")
        elif path not in old:
            lines.append(f"+ {path} = {show(path, new[path])}")
        elif old[path] != new[path]:
            note = " (secret changed)" if path in hidden else ""
            lines.append(f"~ {path}: {show(path, old[path])} -> {show(path, new[path])}{note}")
    if not lines and old_text != r.text:
        lines.append("~ (same values; comments or layout changed)")
    return lines


def current_render(inventory: dict[str, Host], renderer: Renderer, host: str) -> Render:
    """The last render of `host`, checked against the inventory and template as they are now
    (a stale file is refused: what was reviewed is what is shipped)."""
    if host not in inventory:
        raise ProvisionError(f"no host {host!r} in the inventory")
    path = renderer.output_path(host)
    if not path.exists():
        raise ProvisionError(f"{path}: not rendered yet; run `provision render` first")
    text = path.read_text(encoding="utf-8")
    r = renderer.render(inventory[host])
    if not r.ok:
        raise ProvisionError("\n".join(r.errors))
    if r.text != text:
        raise ProvisionError(f"{path} is older than the inventory or template "
                             f"(`provision diff --limit {host}` shows what changed); "
                             "run `provision render` first")
    return r


# ---------------------------------------------------------------------------- images, cards

FAT_MBR_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
FAT_GPT_TYPES = {"ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"}


def _is_fat(head: bytes) -> bool:
    return len(head) >= 512 and head[510:512] == b"\x55\xaa" and (
        head[54:59] == b"FAT12" or head[54:59] == b"FAT16" or head[82:87] == b"FAT32")


def find_fat_partition(path: Path) -> int:
    """Byte offset of the first FAT partition in an MBR or GPT disk (0: a bare FAT file
    system, e.g. /dev/sdX1)."""
    with open(path, "rb") as fh:
        mbr = fh.read(512)
        if _is_fat(mbr):
            return 0
        if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
            raise ProvisionError(f"{path}: no partition table and no FAT file system")
        entries = [struct.unpack_from("<B3xB3xII", mbr, 446 + 16 * i) for i in range(4)]
        candidates: list[int] = []
        if any(t == 0xEE for _s, t, _l, _n in entries):
            fh.seek(512)
            hdr = fh.read(92)
            if hdr[:8] != b"EFI PART":
                raise ProvisionError(f"{path}: protective MBR without a GPT header")
            entry_lba, count, size = struct.unpack_from("<QII", hdr, 72)
            fh.seek(entry_lba * 512)
            table = fh.read(count * size)
            for i in range(count):
                e = table[i * size:(i + 1) * size]
                guid = _guid(e[:16])
                first = struct.unpack_from("<Q", e, 32)[0]
                if guid in FAT_GPT_TYPES and first:
                    candidates.append(first * 512)
        else:
            candidates = [lba * 512 for _s, t, lba, n in entries if t in FAT_MBR_TYPES and n]
        for off in candidates:
            fh.seek(off)
            if _is_fat(fh.read(512)):
                return off
    raise ProvisionError(f"{path}: no FAT partition found")


def _guid(b: bytes) -> str:
    a, b2, c = struct.unpack_from("<IHH", b)
    return f"{a:08x}-{b2:04x}-{c:04x}-{b[8:10].hex()}-{b[10:16].hex()}"


def _mtools(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise ProvisionError(f"{args[0]} not found: install mtools")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
    p = subprocess.run(list(args), capture_output=True, env=env)
    if p.returncode != 0:
        raise ProvisionError(f"{' '.join(args[:1])} failed: {p.stderr.decode(errors='replace').strip()}")
    return p


def read_boot_file(disk: Path, offset: int, name: str = "sipedge.toml") -> bytes | None:
    target = f"{disk}@@{offset}"
    listing = _mtools("mdir", "-b", "-i", target, "::/").stdout.decode(errors="replace")
    if not any(line.strip().lower().endswith("/" + name.lower()) or line.strip().lower() == name.lower()
               for line in listing.splitlines()):
        return None
    return _mtools("mtype", "-i", target, f"::/{name}").stdout


def put_boot_file(disk: Path, offset: int, data: bytes, name: str = "sipedge.toml") -> None:
    """Write `name` into the FAT file system at `offset` (mtools; no root, no loop mount) and
    read it back."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_bytes(data)
        _mtools("mcopy", "-o", "-i", f"{disk}@@{offset}", str(src), f"::/{name}")
    if read_boot_file(disk, offset, name) != data:
        raise ProvisionError(f"{disk}: {name} read back differs from what was written")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def base_image_path(image: Path) -> Path:
    """A disk image file, or a built image directory (out/image-ARCH: bin/manifest.json)."""
    if image.is_dir():
        manifest = image / "bin" / "manifest.json" if (image / "bin").is_dir() else image / "manifest.json"
        if not manifest.exists():
            raise ProvisionError(f"{image}: a directory without manifest.json")
        return manifest.parent / json.loads(manifest.read_text())["disk"]
    if not image.is_file():
        raise ProvisionError(f"{image}: no such image")
    return image


def write_image(base: Path, config: bytes, dest: Path) -> tuple[Path, str]:
    """Copy `base` (sparse) to `dest`, put the config into its FAT partition; (path, sha256)."""
    base = base_image_path(base)
    offset = find_fat_partition(base)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(base), str(tmp)], check=True)
    try:
        put_boot_file(tmp, offset, config)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    sha = sha256_file(dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{sha}  {dest.name}\n")
    return dest, sha


def mounted_devices() -> dict[str, str]:
    out = {}
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            dev, mnt = line.split()[:2]
            out[os.path.realpath(dev)] = mnt.replace("\\040", " ")
    except OSError:
        pass
    return out


def card_target(target: Path) -> tuple[str, int | None]:
    """('dir', None) for a mounted boot partition, ('raw', offset) for a device or file."""
    if target.is_dir():
        return "dir", None
    if not target.exists():
        raise ProvisionError(f"{target}: no such device, file or directory")
    refuse_mounted(target)
    return "raw", find_fat_partition(target)


def refuse_mounted(target: Path) -> None:
    """A device (or one of its partitions) that is mounted must not be written raw."""
    real = os.path.realpath(target)
    for dev, mnt in mounted_devices().items():
        if dev == real or (dev.startswith(real) and dev[len(real):].lstrip("p").isdigit()):
            raise ProvisionError(f"{target}: {dev} is mounted on {mnt}; unmount it, or give the "
                                 f"mount point ({mnt}) instead of the device")


def describe_target(target: Path) -> str:
    if target.is_dir():
        return f"mounted file system at {target}"
    real = Path(os.path.realpath(target))
    if real.is_block_device():
        sysfs = Path("/sys/class/block") / real.name
        try:
            size = int((sysfs / "size").read_text()) * 512
        except (OSError, ValueError):
            size = 0
        model = ""
        for p in (sysfs / "device" / "model", sysfs / "device" / "name"):
            if p.exists():
                model = p.read_text().strip()
                break
        return f"block device {real} ({size / 1e9:.1f} GB {model})".rstrip()
    return f"image file {target} ({target.stat().st_size / 2**20:.0f} MiB)"


def flash_image(image: Path, target: Path) -> None:
    """Write a whole card image onto a raw device or file (refused when mounted or when the
    image does not fit)."""
    if target.is_dir():
        raise ProvisionError(f"{target}: a directory; flashing needs the raw device")
    real = Path(os.path.realpath(target))
    size = image.stat().st_size
    if real.exists():
        refuse_mounted(target)
    if real.is_block_device():
        with open(real, "rb") as fh:
            capacity = fh.seek(0, os.SEEK_END)
        if size > capacity:
            raise ProvisionError(f"{target}: {capacity} bytes, the image needs {size}")
    with open(image, "rb") as src, open(real, "r+b" if real.exists() else "wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def write_card(target: Path, config: bytes) -> str:
    kind, offset = card_target(target)
    if kind == "dir":
        _atomic_write(target / "sipedge.toml", config, 0o644)
        if (target / "sipedge.toml").read_bytes() != config:
            raise ProvisionError(f"{target}/sipedge.toml read back differs")
        return str(target / "sipedge.toml")
    assert offset is not None
    put_boot_file(target, offset, config)
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())
    return f"{target} (FAT partition at byte {offset}) ::/sipedge.toml"


def existing_card_config(target: Path) -> bytes | None:
    kind, offset = card_target(target)
    if kind == "dir":
        p = target / "sipedge.toml"
        return p.read_bytes() if p.exists() else None
    return read_boot_file(target, offset or 0)


# ---------------------------------------------------------------------------- serial push


class SerialLink:
    """A serial tty (raw mode, baud rate set) with bounded reads and writes."""

    def __init__(self, spec: str, baud: int = 115200) -> None:
        self.spec = spec
        try:
            self.fd = os.open(spec, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise ProvisionError(f"{spec}: {exc.strerror}") from None
        if os.isatty(self.fd):
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            speed = getattr(termios, f"B{baud}", termios.B115200)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            termios.tcflush(self.fd, termios.TCIFLUSH)
        self.buf = b""
        self.transcript = bytearray()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 30
        while view:
            if time.monotonic() > deadline:
                raise ProvisionError(f"{self.spec}: write timed out")
            _r, w, _x = select.select([], [self.fd], [], 1.0)
            if not w:
                continue
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def expect(self, patterns: list[bytes], timeout: float) -> tuple[int, bytes]:
        """Wait until one of the regexes matches the unread input; (index, text up to the
        match end). Raises ProvisionError on timeout."""
        deadline = time.monotonic() + timeout
        rxs = [re.compile(p) for p in patterns]
        while True:
            best = None
            for i, rx in enumerate(rxs):
                m = rx.search(self.buf)
                if m and (best is None or m.end() < best[1].end()):
                    best = (i, m)
            if best:
                i, m = best
                text, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return i, text
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProvisionError(f"{self.spec}: no answer in {timeout:.0f} s "
                                     f"(waiting for {' or '.join(p.decode() for p in patterns)})")
            r, _w, _x = select.select([self.fd], [], [], min(left, 0.5))
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                self.buf += data
                self.transcript += data

    def settle(self, patterns: list[bytes], timeout: float, quiet: float = 0.8) -> bytes:
        """Read until the line has been quiet for `quiet` s and the input ends with one of
        the prompts; returns (and consumes) everything read."""
        deadline = time.monotonic() + timeout
        rxs = [re.compile(p) for p in patterns]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProvisionError(f"{self.spec}: no console prompt in {timeout:.0f} s "
                                     f"(last input: {bytes(self.buf[-120:])!r})")
            r, _w, _x = select.select([self.fd], [], [], min(left, quiet))
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                self.buf += data
                self.transcript += data
            elif any(rx.search(self.buf) for rx in rxs):
                text, self.buf = self.buf, b""
                return text

    def close(self) -> None:
        os.close(self.fd)


PROMPT = rb"sipedge> $"
PROMPTS = [PROMPT, rb"password: $", rb"locked for \d+s\s*$", rb"console disabled[^\n]*\s*$"]


class Pusher:
    """Log in on the box's management console and import a config with `config import -`.

    `confirm(diff_lines) -> bool` decides after the box showed its diff (masked here)."""

    def __init__(self, link: SerialLink, password: str, secrets: set[str],
                 out: Callable[[str], None], timeout: float = 60.0,
                 secret_paths: Iterable[str] = ()) -> None:
        self.link = link
        self.password = password
        self.secrets = set(secrets) | _secret_strings(password)
        self.secret_keys = {re.sub(r"\[\d+\]$", "", p.rsplit(".", 1)[-1]) for p in secret_paths}
        self.out = out
        self.timeout = timeout

    def _say(self, text: str) -> None:
        self.out(mask(text, self.secrets))

    def login(self) -> None:
        """From whatever state the console is in (login prompt, shell, a question, a file
        transfer): Ctrl-U and Enter, wait for the line to settle, then answer its prompt."""
        self.link.write(b"\x15\r")
        text = self.link.settle(PROMPTS, self.timeout)
        if re.search(PROMPT, text):
            return
        locked = re.search(rb"locked for (\d+)s\s*$", text)
        if locked:
            raise ProvisionError(f"{self.link.spec}: console locked after failed logins "
                                 f"({locked.group(1).decode()} s left)")
        if re.search(rb"console disabled[^\n]*\s*$", text):
            raise ProvisionError(f"{self.link.spec}: console disabled on the box "
                                 "([management] password_hash is empty)")
        self.link.write(self.password.encode() + b"\r")
        text = self.link.settle(PROMPTS, self.timeout)
        if re.search(PROMPT, text):
            return
        if b"login incorrect" in text:
            raise ProvisionError(f"{self.link.spec}: login incorrect")
        raise ProvisionError(f"{self.link.spec}: login refused: "
                             + text.decode(errors="replace").strip().splitlines()[-1])

    def command(self, line: str, timeout: float | None = None) -> str:
        self.link.write(line.encode() + b"\r")
        _i, text = self.link.expect([PROMPT], timeout or self.timeout)
        return _clean(text, line)

    def push(self, config: bytes, confirm: Callable[[list[str]], bool], apply: bool = True) -> str:
        """Returns 'unchanged', 'written', 'applied' or 'declined'."""
        self.login()
        sha = hashlib.sha256(config).hexdigest()
        self.link.write(f"config import - {len(config)} {sha}\r".encode())
        i, text = self.link.expect([rb"then a line with '\.'[^\n]*\n", PROMPT], self.timeout)
        if i == 1:
            raise ProvisionError("the box refused `config import -`: "
                                 + mask(_clean(text, "config import"), self.secrets))
        b64 = base64.b64encode(config).decode()
        for pos in range(0, len(b64), 76):
            self.link.write(b64[pos:pos + 76].encode() + b"\r")
            self.link.expect([rb"\r\n"], self.timeout)  # one CRLF per line: paced, no overrun
        self.link.write(b".\r")
        i, text = self.link.expect([rb"write it\? \[y/N\] $", PROMPT], self.timeout)
        body = _clean(text, "").removesuffix("write it? [y/N] ").rstrip()
        if i == 1:
            if "no change" in body:
                self._say("box: no change (the box already has this file)")
                self.link.write(b"logout\r")
                return "unchanged"
            raise ProvisionError("the box did not take the file:\n" + mask(body, self.secrets))
        diff = mask_toml_lines([line for line in body.splitlines() if line.strip()],
                               self.secrets, self.secret_keys)
        try:
            ok = confirm(diff)
        except BaseException:  # refused or interrupted: leave the box at its prompt, logged out
            self.link.write(b"n\r")
            self.link.write(b"logout\r")
            raise
        if not ok:
            self.link.write(b"n\r")
            self.link.expect([PROMPT], self.timeout)
            self.link.write(b"logout\r")
            return "declined"
        self.link.write(b"y\r")
        i, text = self.link.expect([rb"written[^\n]*\n", PROMPT], self.timeout)
        if i != 0:
            raise ProvisionError("writing failed on the box: " + mask(_clean(text, ""), self.secrets))
        self.link.expect([PROMPT], self.timeout)
        result = "written"
        if apply:
            self._say("box: " + self.command("apply"))
            result = "applied"
        self.link.write(b"logout\r")
        return result


def _clean(text: bytes, echo: str) -> str:
    s = text.decode("utf-8", "replace").replace("\r", "")
    s = re.sub(r"\x08+ *\x08*", "", s)
    s = s.removesuffix("sipedge> ")
    s = s.strip("\n")
    if echo and s.startswith(echo):
        s = s[len(echo):].lstrip("\n")
    return s
