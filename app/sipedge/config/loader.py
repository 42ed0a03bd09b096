"""Validate a TOML config against the registered sections.

Every key is consumed; leftovers, wrong types and out-of-range values are reported together, each
as `file:line: dotted.key: what is wrong`. Parsing does no I/O beyond reading the one file.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue
from ..sip.grammar import is_digits
from . import sections as _core_sections
from .schema import SECTIONS

_loaded_modules = False


def _ensure_sections() -> None:
    global _loaded_modules
    if _loaded_modules:
        return
    for name in _core_sections.SECTION_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but something it imports does not
                raise
    _loaded_modules = True


class Config:
    """A validated configuration: one frozen dataclass per section, as attributes."""

    def __init__(self, values: dict[str, Any], source: str, text: str) -> None:
        self._values = values
        self.source = source
        self.text = text
        # proxy instances (config/instances.py): the single-proxy layout is one instance,
        # `default`, the config itself; with [instances.<name>] each is a Config of its own
        self.instance_name = "default"
        self.required = True
        self.data_dir = ""
        self.instances: dict[str, Config] = {"default": self}
        self.warnings: list[ConfigIssue] = []  # deprecated keys that were still honoured

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def sections(self) -> dict[str, Any]:
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._values == other._values

    def __repr__(self) -> str:
        return f"Config({self.source!r})"


# ---------------------------------------------------------------- line numbers

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", raw)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def line_map(text: str) -> dict[str, int]:
    """Map dotted key paths (`listen[1].port`) to the line where they are defined."""
    lines: dict[str, int] = {}
    counters: dict[str, int] = {}
    prefix = ""
    in_multiline: str | None = None
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if depth > 0:
            depth += _bracket_delta(line)
            continue
        header = _HEADER.match(line)
        if header:
            keys = _split_key(header.group(2))
            if header.group(1) == "[[":
                parent = _join(keys[:-1], counters)
                plain = f"{parent}.{keys[-1]}" if parent else keys[-1]
                index = counters.get(plain, -1) + 1
                counters[plain] = index
                path = f"{plain}[{index}]"
            else:
                path = _join(keys, counters)
            lines.setdefault(path, lineno)
            prefix = path
            continue
        key = _KEY.match(line)
        if not key:
            continue
        path = ".".join([prefix] + _split_key(key.group(1))) if prefix else ".".join(_split_key(key.group(1)))
        lines.setdefault(path, lineno)
        rest = line[key.end():]
        for quote in ('"""', "'''"):
            if rest.count(quote) % 2 == 1:
                in_multiline = quote
        if not in_multiline:
            depth = _bracket_delta(rest)
    return lines


def _join(keys: list[str], counters: dict[str, int]) -> str:
    """Join header keys, resolving arrays of tables to their current element."""
    path = ""
    for key in keys:
        path = f"{path}.{key}" if path else key
        if path in counters:
            path = f"{path}[{counters[path]}]"
    return path


def _bracket_delta(s: str) -> int:
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'[^\']*\'|#.*$', "", s)
    return s.count("[") + s.count("{") - s.count("]") - s.count("}")


def _line_for(lines: dict[str, int], path: str) -> int:
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return 1


# ---------------------------------------------------------------- validation


class _Validator:
    def __init__(self, source: str, lines: dict[str, int], prefix: str = "") -> None:
        self.source = source
        self.lines = lines
        self.issues: list[ConfigIssue] = []
        self.prefix = prefix  # `instances.<name>.` while an instance's tables are checked

    def error(self, path: str, reason: str) -> None:
        path = self.prefix + path
        self.issues.append(ConfigIssue(self.source, _line_for(self.lines, path), path, reason))

    def issue(self, path: str, reason: str) -> ConfigIssue:
        return ConfigIssue(self.source, _line_for(self.lines, path), path, reason)

    def build(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.error(path, f"expected a table, got {_tname(data)}")
            return None
        before = len(self.issues)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            sub = f"{path}.{key}"
            if key not in fields:
                near = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                self.error(sub, f"unknown key{hint}")
                continue
            converted = self.convert(hints[key], value, sub)
            if converted is not _INVALID and self.check_limits(fields[key], converted, sub):
                values[key] = converted
        for name, f in fields.items():
            if f.metadata.get("required") and name not in data:
                self.error(f"{path}.{name}", "required key is missing")
        if len(self.issues) > before:
            return None
        return cls(**values)

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None:
                return None
            return self.convert(args[0], value, path)
        if origin is list:
            (item,) = typing.get_args(tp)
            if not isinstance(value, list):
                self.error(path, f"expected an array, got {_tname(value)}")
                return _INVALID
            out = []
            ok = True
            for i, v in enumerate(value):
                c = self.convert(item, v, f"{path}[{i}]")
                ok = ok and c is not _INVALID
                out.append(c)
            return out if ok else _INVALID
        if dataclasses.is_dataclass(tp):
            built = self.build(tp, value, path)
            return _INVALID if built is None else built
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        else:
            raise TypeError(f"unsupported config type {tp!r} at {path}")
        self.error(path, f"expected {_TYPE_NAMES.get(tp, tp.__name__)}, got {_tname(value)}")
        return _INVALID

    def check_limits(self, f: dataclasses.Field, value: Any, path: str) -> bool:
        meta = f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            self.error(path, f"must be one of {', '.join(map(str, meta['choices']))}")
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("min") is not None and value < meta["min"]:
                self.error(path, f"must be >= {meta['min']}")
                return False
            if meta.get("max") is not None and value > meta["max"]:
                self.error(path, f"must be <= {meta['max']}")
                return False
        return True


class _Invalid:
    pass


_INVALID = _Invalid()
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _tname(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def load_text(text: str, source: str = "<config>") -> Config:
    """Validate TOML text. Raises ConfigError listing every problem."""
    _ensure_sections()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigError([ConfigIssue(source, line, "(syntax)", msg)]) from None
    lines = line_map(text)
    v = _Validator(source, lines)
    if "instances" in data:  # several proxies in one file (config/instances.py)
        from .instances import build_instances

        config = build_instances(data, v, text)
    else:
        config = build_config(data, v, text)
    if v.issues or config is None:
        raise ConfigError(v.issues)
    return config


def build_config(data: dict[str, Any], v: _Validator, text: str) -> Config | None:
    """One proxy's Config from parsed TOML; problems go to `v` (None when there are any)."""
    before = len(v.issues)
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in SECTIONS:
            near = difflib.get_close_matches(name, SECTIONS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            v.error(name, f"unknown section{hint}")
            continue
        cls, array = SECTIONS[name]
        if array:
            if not isinstance(value, list):
                v.error(name, f"expected [[{name}]] tables, got {_tname(value)}")
                continue
            built = [v.build(cls, item, f"{name}[{i}]") for i, item in enumerate(value)]
            values[name] = tuple(built)
        else:
            values[name] = v.build(cls, value, name)
    if len(v.issues) > before:
        return None
    for name, (cls, array) in SECTIONS.items():
        if name not in values:
            values[name] = () if array else cls()
    config = Config(values, v.source, text)
    _moved_keys(config, data, v)
    _check_semantics(config, v)
    return None if len(v.issues) > before else config


# deprecated key -> the key that replaced it: the old one is still honoured (copied to the
# new one, with a warning naming file:line) unless both are set, which is an error
MOVED_KEYS = {"supervisor.mark_good_after_s": "update.mark_good_after_s"}


def _moved_keys(config: Config, data: dict[str, Any], v: _Validator) -> None:
    for old, new in MOVED_KEYS.items():
        osec, okey = old.split(".")
        nsec, nkey = new.split(".")
        if okey not in (data.get(osec) or {}):
            continue
        if nkey in (data.get(nsec) or {}):
            v.error(old, f"deprecated, and [{nsec}] {nkey} is set too: keep only [{nsec}] "
                         f"{nkey}")
            continue
        value = getattr(config._values[osec], okey)
        config._values[nsec] = dataclasses.replace(config._values[nsec], **{nkey: value})
        config.warnings.append(v.issue(old, f"deprecated: use [{nsec}] {nkey} (this value "
                                            f"{value:g} is used for it)"))


def _check_semantics(config: Config, v: _Validator) -> None:
    """Cross-field checks that a type cannot express."""
    from ..errors import RemoteProtocolError
    from ..sip.uri import (
        parse_uri,  # local: config must not depend on sip at import time
    )

    seen = set()
    for i, listener in enumerate(config.listen):
        key = (listener.proto, listener.address, listener.port)
        if key in seen:
            v.error(f"listen[{i}]", "duplicate listener")
        seen.add(key)
        if listener.advertise and not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(:\d{1,5})?",
                                                   listener.advertise):
            v.error(f"listen[{i}].advertise", "expected host[:port]")
    for key, uri in [("routing.default_destination", config.routing.default_destination)] + [
        (f"routing.rule[{i}].destination", r.destination) for i, r in enumerate(config.routing.rule)
    ]:
        if uri:
            try:
                parse_uri(uri)
            except RemoteProtocolError as exc:
                v.error(key, f"not a SIP URI: {exc.reason}")
    _check_dns_tls(config, v)
    _check_modules(config, v)


# modules [core] modules may name, and the modules each needs loaded too
LOADABLE_MODULES = {"security": (), "registrar": (), "auth": ("registrar",), "dispatcher": (),
                    "enum": (), "http_client": (), "uac": (), "diameter": (),
                    "ims_pcscf": ()}


def _check_modules(config: Config, v: _Validator) -> None:
    """[core] modules, and the cross-field rules of the module sections (checked whether or
    not the module is loaded, so that a file stays valid when a module is switched on)."""
    import ipaddress

    mods = list(config.core.modules)
    for i, name in enumerate(mods):
        if name not in LOADABLE_MODULES:
            near = difflib.get_close_matches(name, LOADABLE_MODULES, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            v.error(f"core.modules[{i}]", f"unknown module {name!r}{hint}")
        elif mods.index(name) != i:
            v.error(f"core.modules[{i}]", f"module {name!r} listed twice")
        else:
            for dep in LOADABLE_MODULES[name]:
                if dep not in mods:
                    v.error(f"core.modules[{i}]", f"module {name!r} needs {dep!r} loaded too")
    sec = getattr(config, "security", None)
    if sec is not None:
        for i, net in enumerate(sec.trusted):
            try:
                ipaddress.ip_network(net.strip(), strict=False)
            except ValueError:
                v.error(f"security.trusted[{i}]", "expected an address or CIDR network")
        for i, acl in enumerate(sec.acl):
            if acl.listener != "*" and not re.fullmatch(
                    r"(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+):\d{1,5}", acl.listener):
                v.error(f"security.acl[{i}].listener", "expected proto:address:port or *")
            for kind in ("allow", "deny"):
                for j, net in enumerate(getattr(acl, kind)):
                    try:
                        ipaddress.ip_network(net.strip(), strict=False)
                    except ValueError:
                        v.error(f"security.acl[{i}].{kind}[{j}]",
                                "expected an address or CIDR network")
    reg = getattr(config, "registrar", None)
    if reg is not None:
        if not reg.min_expires_s <= reg.default_expires_s <= reg.max_expires_s:
            v.error("registrar.default_expires_s",
                    f"must lie between min_expires_s ({reg.min_expires_s}) and max_expires_s "
                    f"({reg.max_expires_s})")
        from ..modules.registrar.store import _check_subscriber

        seen_subs: dict = {}
        for i, sub in enumerate(reg.subscriber):
            try:
                _check_subscriber(sub.username, sub.domain, sub.ha1_md5, sub.ha1_sha256)
            except ValueError as exc:
                v.error(f"registrar.subscriber[{i}]", str(exc))
            key = (sub.username, sub.domain.lower())
            if key in seen_subs:
                v.error(f"registrar.subscriber[{i}]", f"duplicate of subscriber[{seen_subs[key]}]")
            seen_subs.setdefault(key, i)
    auth = getattr(config, "auth", None)
    if auth is not None:
        from ..modules.auth.digest import ALGORITHMS

        if auth.secret and len(auth.secret) < 16:
            v.error("auth.secret", "must be at least 16 characters (or empty: generated)")
        if not auth.algorithms:
            v.error("auth.algorithms", "name at least one algorithm")
        for i, alg in enumerate(auth.algorithms):
            if alg not in ALGORITHMS:
                v.error(f"auth.algorithms[{i}]", f"must be one of {', '.join(ALGORITHMS)}")
    _check_dispatcher_enum(config, v)
    uac = getattr(config, "uac", None)
    if uac is not None:
        from ..modules.uac.params import check as check_uac

        for where, reason in check_uac(uac):
            v.error(where, reason)
    dia = getattr(config, "diameter", None)
    if dia is not None:  # [diameter]: its own checks (modules/diameter/params.py)
        extra = dia.loaded_problems() if "diameter" in mods else []
        for key, reason in dia.problems() + extra:
            v.error(f"diameter.{key}", reason)
    _check_ims_pcscf(config, v)


def _check_ims_pcscf(config: Config, v: _Validator) -> None:
    """[ims_pcscf]: address when loaded, one worker (the SA sets live in one process),
    algorithm lists, SPI range."""
    import ipaddress

    p = getattr(config, "ims_pcscf", None)
    if p is None:
        return
    if "ims_pcscf" in config.core.modules:
        if not p.address:
            v.error("ims_pcscf.address", "required when ims_pcscf is loaded")
        if config.core.workers != 1:
            v.error("core.workers", "ims_pcscf keeps the UEs' SA sets and protected "
                    "connections in one process: set workers = 1 (docs/ims.md, One worker)")
    if p.address:
        try:
            ipaddress.ip_address(p.address)
        except ValueError:
            v.error("ims_pcscf.address", "expected an IP address")
    if p.spi_min >= p.spi_max:
        v.error("ims_pcscf.spi_min", "must be below spi_max")
    if p.port_base + 2 * p.slots - 1 > 65535:
        v.error("ims_pcscf.slots", "port_base + 2*slots - 1 exceeds 65535")
    try:
        p.preference()
    except ValueError as exc:
        v.error("ims_pcscf", str(exc))


def _check_dispatcher_enum(config: Config, v: _Validator) -> None:
    """[dispatcher] destinations and probe settings, [enum] servers. The list file is not
    read here (no I/O while parsing): the main process parses it at start and on
    dispatcher.reload, with file:line errors."""
    import ipaddress

    disp = getattr(config, "dispatcher", None)
    if disp is not None:
        try:
            disp.settings()
        except ValueError as exc:
            text = str(exc)
            key = "probe_ok_codes" if "code pattern" in text else \
                "probe_timeout_s" if "probe_timeout_s" in text else "probe_interval_s"
            v.error(f"dispatcher.{key}", text)
        try:
            dests = disp.config_destinations()
        except ValueError as exc:
            where, _, reason = str(exc).partition(": ")
            v.error(f"dispatcher.{where}", reason)
        else:
            seen: dict = {}
            for i, d in enumerate(dests):
                if d.key in seen:
                    v.error(f"dispatcher.destination[{i}].uri",
                            f"duplicate of destination[{seen[d.key]}] in set {d.set_id}")
                seen.setdefault(d.key, i)
        if disp.probe_address:
            try:
                ipaddress.ip_address(disp.probe_address)
            except ValueError:
                v.error("dispatcher.probe_address", "expected an IP address")
        try:
            from ..errors import RemoteProtocolError
            from ..sip.uri import parse_uri

            parse_uri(disp.probe_from)
        except RemoteProtocolError as exc:
            v.error("dispatcher.probe_from", f"not a SIP URI: {exc.reason}")
    enum = getattr(config, "enum", None)
    if enum is not None:
        for i, server in enumerate(enum.servers):
            if split_server(server) is None:
                v.error(f"enum.servers[{i}]", "expected ip, ip:port or [ipv6]:port")
        if not enum.suffix.strip(". "):
            v.error("enum.suffix", "must name a domain (e.g. e164.arpa.)")
        if not enum.services:
            v.error("enum.services", "name at least one service")


def _check_dns_tls(config: Config, v: _Validator) -> None:
    """[dns] server addresses and transports; [tls] needed by tls listeners."""
    for i, server in enumerate(config.dns.servers):
        if split_server(server) is None:
            v.error(f"dns.servers[{i}]", "expected ip, ip:port or [ipv6]:port")
    for i, t in enumerate(config.dns.srv_transports):
        if t not in ("udp", "tcp", "tls"):
            v.error(f"dns.srv_transports[{i}]", "must be one of udp, tcp, tls")
    tls = config.tls
    if any(lp.proto == "tls" for lp in config.listen) and not (tls.certificate and tls.private_key):
        v.error("tls.certificate", "a tls listener needs tls.certificate and tls.private_key")
    if tls.require_certificate and not tls.ca_bundle:
        v.error("tls.ca_bundle", "require_certificate needs the CA bundle that verifies clients")


def split_server(text: str) -> tuple[str, int] | None:
    """`ip`, `ip:port` or `[ipv6]:port` -> (ip, port); None when malformed."""
    import ipaddress

    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            return None
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    if not is_digits(port, 5) or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def load_file(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(path), 0, "(file)", str(exc))]) from None
    return load_text(text, str(path))


def load_default() -> Config:
    return load_text(DEFAULT_TOML, "<embedded default>")


DEFAULT_TOML = (Path(__file__).with_name("default.toml")).read_text(encoding="utf-8")

# The shipped sipedge.toml of the appliance (board/common/sipedge.toml is a copy, checked by a
# test): what `factory-reset` writes and what a box with no usable config falls back to.
FACTORY_PATH = Path(__file__).with_name("factory.toml")


def factory_text() -> str:
    return FACTORY_PATH.read_text(encoding="utf-8")


def config_relative(config: Config, name: str) -> str:
    """A file named in the config: a relative path is relative to the config file's directory
    (for the embedded default, to the working directory)."""
    p = Path(name)
    if p.is_absolute() or not config.source or config.source.startswith("<"):
        return str(p)
    return str(Path(config.source).resolve().parent / p)
