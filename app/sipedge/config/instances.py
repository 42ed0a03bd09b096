"""Several proxy instances in one config file: `[instances.<name>]` tables.

    [supervisor]            # box-wide sections stay at the top level
    ...
    [instances.pcscf]
    required = true         # the watchdog is petted only while every required one is healthy
    data_dir = "/data/sipedge/pcscf"
    [instances.pcscf.core]
    modules = ["registrar"]
    [[instances.pcscf.listen]]
    port = 5060

Each instance holds what a single proxy has (every section that is not box-wide: [core],
[[listen]], [proxy], [routing], [tm], [dns], [tls] and the module sections) and is validated
as one, with its errors under `instances.<name>.` and the file:line of the key. The file without
[instances] is one instance named `default` (`Config.instances == {"default": config}`).

Derived per instance unless set: `core.ctl_socket` = `/run/sipedge/<name>/ctl.sock`
(`sipedgectl -i <name>` finds it there), `data_dir` = `/data/sipedge/<name>` (relative: to the
config file), `registrar.db_path` = `<data_dir>/location.sqlite`. Refused at load, naming both
instances and file:line: two instances binding the same transport/address/port (SIP [[listen]],
[[diameter.listen]], the ims_pcscf protected port range; a wildcard address overlaps every
address of its family; tcp and tls share the TCP port space, Diameter uses TCP or SCTP), the
same control socket, the same registrar database, or overlapping ims_pcscf XFRM reqid ranges
(SPI ranges too on one Gm address).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from .schema import SECTIONS

if TYPE_CHECKING:
    from .loader import Config, _Validator

NAME = re.compile(r"[a-z][a-z0-9_-]{0,30}")
INSTANCE_KEYS = ("required", "data_dir")
RUN_DIR = "/run/sipedge"
DATA_DIR = "/data/sipedge"


def ctl_socket_for(name: str) -> str:
    """The control socket an instance gets when its [core] names none (`default`: the
    single proxy's)."""
    if name == "default":
        return f"{RUN_DIR}/ctl.sock"
    return f"{RUN_DIR}/{name}/ctl.sock"


def box_sections() -> set[str]:
    """Sections that exist once per box (the appliance's: supervisor, watchdog, panel, ...)."""
    return {name for name, (cls, _) in SECTIONS.items()
            if cls.__module__.startswith("sipedge.appliance")}


def instance_sections() -> set[str]:
    return set(SECTIONS) - box_sections()


def build_instances(data: dict[str, Any], v: _Validator, text: str) -> Config | None:
    """The Config of a file with [instances]: the box-wide sections at the top, and one
    Config per instance in `.instances` (each also carrying the box-wide sections)."""
    from .loader import _Validator, build_config

    box = box_sections()
    before = len(v.issues)
    top_data = {k: val for k, val in data.items() if k != "instances"}
    for k in list(top_data):
        if k in SECTIONS and k not in box:
            v.error(k, f"[{k}] belongs inside each [instances.<name>] table when the file "
                    "has [instances]")
            del top_data[k]
    top = build_config(top_data, v, text)
    table = data["instances"]
    if not isinstance(table, dict) or not table:
        v.error("instances", "expected one or more [instances.<name>] tables")
        return None
    instances: dict[str, Config] = {}
    for name, raw in table.items():
        where = f"instances.{name}"
        if not NAME.fullmatch(name):
            v.error(where, "instance name: a lower-case letter, then letters, digits, - or _ "
                    "(at most 31)")
            continue
        if not isinstance(raw, dict):
            v.error(where, "expected a table [instances.<name>]")
            continue
        sub = _Validator(v.source, v.lines, prefix=where + ".")
        sub.issues = v.issues  # one list: every instance's problems reported together
        required = raw.get("required", True)
        if not isinstance(required, bool):
            sub.error("required", "expected a boolean")
        data_dir = raw.get("data_dir", f"{DATA_DIR}/{name}")
        if not isinstance(data_dir, str) or not data_dir.strip():
            sub.error("data_dir", "expected a directory path")
            data_dir = f"{DATA_DIR}/{name}"
        sections: dict[str, Any] = {}
        for k, val in raw.items():
            if k in INSTANCE_KEYS:
                continue
            if k in box:
                sub.error(k, f"[{k}] is box-wide: put it at the top level, outside [instances]")
                continue
            sections[k] = val
        _derive(sections, name, data_dir)
        cfg = build_config(sections, sub, text)
        if cfg is None or top is None:
            continue
        values = cfg.sections()
        values.update({k: getattr(top, k) for k in box})
        cfg._values = values
        cfg.instance_name = name
        cfg.required = bool(required)
        cfg.data_dir = data_dir
        instances[name] = cfg
    if len(v.issues) > before or top is None:
        return None
    _check_overlaps(instances, v)
    if len(v.issues) > before:
        return None
    for cfg in instances.values():
        cfg.instances = instances
    top.instances = instances
    top.instance_name = ""
    return top


def _derive(sections: dict[str, Any], name: str, data_dir: str) -> None:
    """Fill in the per-instance defaults (control socket, registrar database)."""
    core = sections.get("core", {})
    if isinstance(core, dict) and "ctl_socket" not in core:
        sections["core"] = dict(core, ctl_socket=ctl_socket_for(name))
    reg = sections.get("registrar", {})
    if isinstance(reg, dict) and "db_path" not in reg:
        sections["registrar"] = dict(reg, db_path=str(PurePosixPath(data_dir) /
                                                      "location.sqlite"))


def _space(proto: str) -> str:
    """The kernel's port space of a transport: tls listens on a TCP port, Diameter on TCP or
    SCTP."""
    return "tcp" if proto == "tls" else proto


def _overlap(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    return ia.version == ib.version and (ia.is_unspecified or ib.is_unspecified or ia == ib)


class _Bound(NamedTuple):
    """Something an instance binds: ports [lo, hi] of one transport on one address."""

    key: str  # under instances.<name>.
    proto: str
    address: str
    lo: int
    hi: int

    def text(self) -> str:
        ports = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        return f"{self.proto} {self.address}:{ports}"

    def clashes(self, other: _Bound) -> bool:
        return (_space(self.proto) == _space(other.proto) and self.lo <= other.hi and
                other.lo <= self.hi and _overlap(self.address, other.address))


def bound_ports(cfg: Config) -> list[_Bound]:
    """Every address/port an instance binds: its SIP [[listen]] entries (tls included), the
    Diameter listeners and the ims_pcscf protected ports (UDP and TCP, port_base to
    port_base + 2*slots - 1) of the modules it loads. A Diameter port 0 (any free port)
    clashes with nothing. The control socket and registrar database are checked apart."""
    out = [_Bound(f"listen[{i}]", lp.proto, lp.address, lp.port, lp.port)
           for i, lp in enumerate(cfg.listen)]
    mods = cfg.core.modules
    dia = getattr(cfg, "diameter", None)
    if "diameter" in mods and dia is not None:
        out += [_Bound(f"diameter.listen[{i}]", d.transport, d.address, d.port, d.port)
                for i, d in enumerate(dia.listen) if d.port]
    pc = getattr(cfg, "ims_pcscf", None)
    if "ims_pcscf" in mods and pc is not None and pc.address:
        hi = pc.port_base + 2 * pc.slots - 1
        out += [_Bound("ims_pcscf.port_base", proto, pc.address, pc.port_base, hi)
                for proto in ("udp", "tcp")]
    return out


def _check_overlaps(instances: dict[str, Config], v: _Validator) -> None:
    """Refuse what two instances cannot both have: an address/port (`bound_ports`), a control
    socket, a registrar database, and (ims_pcscf) the kernel-wide XFRM reqid range (one
    instance's start-up cleanup would remove the other's SAs) and, on one Gm address, the SPI
    range (the kernel keys inbound SAs by address and SPI). Each error names both
    instances and the other's file:line."""
    bound: list[tuple[str, _Bound]] = []
    sockets: dict[str, str] = {}
    dbs: dict[str, str] = {}
    xfrm: list[tuple[str, int, int, int, int, str]] = []
    for name, cfg in instances.items():
        for b in bound_ports(cfg):
            for other, ob in bound:
                if other != name and b.clashes(ob):
                    v.error(f"instances.{name}.{b.key}",
                            f"{b.text()} overlaps instance '{other}' "
                            f"({_at(v, other, ob.key)}: {ob.text()})")
                    break
            bound.append((name, b))
        sock = str(Path(cfg.core.ctl_socket))
        if sock in sockets:
            v.error(f"instances.{name}.core.ctl_socket",
                    f"same control socket as instance '{sockets[sock]}'")
        sockets.setdefault(sock, name)
        if "registrar" in cfg.core.modules:
            db = cfg.registrar.db_path
            if db in dbs:
                v.error(f"instances.{name}.registrar.db_path",
                        f"same registrar database as instance '{dbs[db]}'")
            dbs.setdefault(db, name)
        pc = getattr(cfg, "ims_pcscf", None)
        if "ims_pcscf" in cfg.core.modules and pc is not None:
            rq = (pc.reqid_base, pc.reqid_base + pc.slots - 1)
            for other, olo, ohi, slo, shi, addr in xfrm:
                if rq[0] <= ohi and olo <= rq[1]:
                    v.error(f"instances.{name}.ims_pcscf.reqid_base",
                            f"reqids {rq[0]:#x}-{rq[1]:#x} overlap instance '{other}' "
                            f"({_at(v, other, 'ims_pcscf.reqid_base')}: "
                            f"{olo:#x}-{ohi:#x}): give each P-CSCF its own reqid_base")
                if pc.spi_min <= shi and slo <= pc.spi_max and _overlap(pc.address, addr):
                    v.error(f"instances.{name}.ims_pcscf.spi_min",
                            f"SPIs {pc.spi_min}-{pc.spi_max} overlap instance '{other}' "
                            f"({_at(v, other, 'ims_pcscf.spi_min')}: {slo}-{shi})")
            xfrm.append((name, rq[0], rq[1], pc.spi_min, pc.spi_max, pc.address))


def _at(v: _Validator, name: str, key: str) -> str:
    """`file:line: instances.<name>.<key>` of the other party of a clash."""
    from .loader import _line_for

    path = f"instances.{name}.{key}"
    return f"{path} at {v.source}:{_line_for(v.lines, path)}"
