"""Benchmark modes: what is measured, as data.

A mode names the SIPp caller and callee scenarios and one config template
per proxy.  Adding a mode (stateful, registration, dispatcher, ...) means
adding its scenario files and config templates and one Mode entry here;
bench/run.py and the proxy drivers do not change.
"""
import os
import re
from dataclasses import dataclass, replace

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    uac_scenario: str            # path of the caller scenario
    uas_scenario: str            # path of the callee scenario
    configs: dict                # proxy name -> config template path
    messages_per_call: int       # SIP messages the proxy forwards per call
    sipedge_files: tuple = ()    # extra templates rendered next to sipedge's config
    kamailio_files: tuple = ()   # extra templates rendered next to Kamailio's config
    uas_count: int = 1           # SIPp callees per proxy: 0 (REGISTER), 1, or 3 (dispatcher)
    values: tuple = ()           # extra (PLACEHOLDER, value) pairs for every template
    subscribers: int = 0         # users preloaded into the proxy's database (registration)
    rates: tuple = ()            # default fixed rates when --rates is not given
    search_start: int = 0        # first rate of the maximum-rate search (0: run.py's default)
    sipedge_modules: tuple = ()  # sipedge [core] modules the mode needs (checked before start)
    unit: str = "call"           # what one SIPp "call" is here (call, registration)
    kamailio_shm_mb: int = 256   # Kamailio -m: shared memory, where tm keeps its transactions

    def config_template(self, proxy):
        return self.configs.get(proxy)

    def files(self, proxy):
        return {"sipedge": self.sipedge_files, "kamailio": self.kamailio_files}.get(proxy, ())


def _path(*parts):
    return os.path.join(HERE, *parts)


MODES = {
    "stateless": Mode(
        name="stateless",
        description="INVITE/180/200/ACK/BYE/200 through a stateless record-routing forwarder",
        uac_scenario=_path("scenarios", "stateless", "uac.xml"),
        uas_scenario=_path("scenarios", "stateless", "uas.xml"),
        configs={
            "kamailio": _path("configs", "kamailio-stateless.cfg"),
            "sipedge": _path("configs", "sipedge-stateless.toml"),
            "relay": None,  # the bare relay takes no config: it relays anything
        },
        messages_per_call=6,
    ),
    "stateful": Mode(
        name="stateful",
        description="the same calls through a transaction-stateful proxy: "
                    "record-route + t_relay (sipedge script / Kamailio tm)",
        uac_scenario=_path("scenarios", "stateless", "uac.xml"),
        uas_scenario=_path("scenarios", "stateless", "uas.xml"),
        configs={
            "kamailio": _path("configs", "kamailio-stateful.cfg"),
            "sipedge": _path("configs", "sipedge-stateful.toml"),
        },
        messages_per_call=6,
        sipedge_files=(_path("configs", "sipedge-stateful-route.py"),),
    ),
}

# Registration (RFC 7502 terms): REGISTER -> 401 -> REGISTER with digest credentials -> 200,
# the binding written to SQLite.  One SIPp "call" is one registration (4 messages).  The
# users come from a SIPp injection file the bench writes (users.csv), and the same users
# are preloaded into each proxy's subscriber table before it starts.
_REG = dict(
    uac_scenario=_path("scenarios", "registration", "uac.xml"),
    uas_scenario=None,
    uas_count=0,
    messages_per_call=4,
    subscribers=2000,
    rates=(200, 500),
    search_start=500,
    unit="registration",
)
for _name, _sync, _dbmode, _what in (
        ("registration", "full", 1,
         "REGISTER with MD5 digest auth, bindings in SQLite: sipedge db_synchronous=full "
         "vs Kamailio auth_db + usrloc db_mode=1 (write-through) on db_sqlite"),
        ("registration-normal", "normal", 0,
         "the same REGISTERs: sipedge db_synchronous=normal vs Kamailio usrloc db_mode=0 "
         "(its default: bindings in memory only; subscribers still read from SQLite)")):
    MODES[_name] = Mode(
        name=_name, description=_what,
        configs={"kamailio": _path("configs", "kamailio-registration.cfg"),
                 "sipedge": _path("configs", "sipedge-registration.toml")},
        values=(("DB_SYNCHRONOUS", _sync), ("USRLOC_DB_MODE", _dbmode)),
        sipedge_modules=("registrar", "auth"),
        **_REG)

# Dispatcher: the stateful calls of "stateful", spread by the proxy over 3 SIPp callees
# (one destination set), round-robin or hash over the Call-ID.  No health probing on
# either side (the SIPp callees do not answer OPTIONS).
for _name, _ds_alg, _alg in (("dispatcher-rr", 4, "round_robin"),
                             ("dispatcher-hash", 0, "hash_callid")):
    MODES[_name] = Mode(
        name=_name,
        description=f"stateful calls dispatched over 3 SIPp callees with {_alg} "
                    f"(sipedge dispatcher module / Kamailio dispatcher alg {_ds_alg})",
        uac_scenario=_path("scenarios", "stateless", "uac.xml"),
        uas_scenario=_path("scenarios", "stateless", "uas.xml"),
        uas_count=3,
        configs={"kamailio": _path("configs", "kamailio-dispatcher.cfg"),
                 "sipedge": _path("configs", "sipedge-dispatcher.toml")},
        kamailio_files=(_path("configs", "kamailio-dispatcher.list"),),
        sipedge_files=(_path("configs", "sipedge-dispatcher-route.py"),),
        values=(("DS_ALG", _ds_alg), ("ALG", _alg)),
        messages_per_call=6,
        sipedge_modules=("dispatcher",),
    )
# Kamailio's tm keeps every transaction in shared memory until its wait timer (5 s) after
# the final reply: 2 transactions per call (INVITE, BYE) of ~13 KiB each (the cell with
# room for 12 branches, the request cloned into shared memory), so 2000 calls/s hold
# ~20000 transactions, ~260 MiB.  With -m 256 Kamailio ran out at ~2000/s ("could not
# allocate shared memory from shm pool", no transaction, so no reply: the caller's
# "receive timeout").  4096 MiB hold ~30000 calls/s; pages are only touched when used.
STATEFUL_SHM_MB = 4096
for _name in ("stateful", "dispatcher-rr", "dispatcher-hash"):
    MODES[_name] = replace(MODES[_name], kamailio_shm_mb=STATEFUL_SHM_MB)

# "registration" and "dispatcher" as shorthands for --mode
ALIASES = {"registration": ["registration"], "dispatcher": ["dispatcher-rr", "dispatcher-hash"]}


def render(template_path, values):
    """Replace @KEY@ placeholders; fail loudly on one left over."""
    with open(template_path) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if leftover:
        raise ValueError(f"{template_path}: unfilled placeholders {leftover}")
    return text


def users(n):
    """The registration mode's subscribers: (username, password), the same for every proxy
    and for SIPp's injection file."""
    return [(f"u{i:06d}", f"pw{i:06d}x") for i in range(n)]


def write_users_csv(path, n, part=0, parts=1):
    """SIPp injection file, one registration a line: [field0] the user, [field1] SIPp's
    authentication keyword with the user's credentials (SIPp does not expand [field1]
    inside [authentication password=...], but it evaluates a keyword held in a field).
    part/parts: every parts-th user from the part-th (disjoint files for several callers)."""
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for u, pw in users(n)[part::parts]:
            f.write(f"{u};[authentication username={u} password={pw}]\n")
    return path
