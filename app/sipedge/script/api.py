"""What a routing script sees: the message wrappers and the actions they record.

A script defines `request_route(msg)` and optionally `reply_route(msg)`. Calls such as
`msg.forward()`, `msg.reply(404, "Not Here")` and `msg.drop()` record an action object
(`Forward`, `Reply`, `Drop`); the proxy carries the actions out when the route returns.
Nothing here does I/O. See docs/routing-api.md.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from ..sip.message import Request, Response
from ..sip.proxy import ProxyCore, Source
from ..sip.uri import URI, parse_uri

_script_log = logging.getLogger("sipedge.script")


@dataclass(frozen=True)
class Forward:
    """Relay the request statelessly, to `uri` (a destination URI) or by Route / R-URI."""

    uri: URI | None = None


@dataclass(frozen=True)
class Reply:
    """Answer the request statelessly."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str | None = None


@dataclass(frozen=True)
class Drop:
    """Do nothing more with the message."""

    why: str = ""


@dataclass(frozen=True)
class Relay:
    """Relay statefully (t_relay): a branch to `uri` (a destination URI) or by dst URI /
    Route / R-URI, plus one branch per `append_branch()`."""

    uri: URI | None = None


@dataclass(frozen=True)
class TReply:
    """Answer statefully (t_reply): retransmissions of the request are absorbed."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str | None = None


Action = Forward | Reply | Drop | Relay | TReply
_FORWARD_BY_ROUTE = Forward()  # actions are immutable: the common one is shared

_ROUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TmState:
    """What the transaction API of one message recorded (created on first use, so that
    stateless scripts pay nothing). Read by io/tm_driver.py."""

    __slots__ = ("routes", "branches", "branch_opts", "main_path", "reply", "canceled",
                 "branch_index", "vars")

    def __init__(self) -> None:
        self.routes: dict[str, str | None] = {}  # failure / reply / branch -> function name
        self.branches: list[URI] = []  # append_branch(): extra R-URIs
        # (dst URI, Path, send socket) per appended branch
        self.branch_opts: list[tuple[URI | None, tuple[str, ...], str | None]] = []
        self.main_path: tuple[str, ...] = ()  # Route values for the main branch only
        self.reply: "ReplyMsg | None" = None  # failure route: the winning reply
        self.canceled = False  # failure route: the caller CANCELled
        self.branch_index: int | None = None  # branch route: which branch
        self.vars: dict = {}  # per-transaction variables (RequestMsg.vars)


def _route_name(name: str) -> str:
    if not isinstance(name, str) or not _ROUTE_NAME.fullmatch(name):
        raise ValueError(f"route name must be a function name of the script, not {name!r}")
    return name


def _check_status(status: int | None, regex: str) -> bool:
    return status is not None and re.fullmatch(regex, str(status)) is not None


def _reply_parts(status: int, reason: str,
                 headers: dict[str, str] | list[tuple[str, str]] | tuple | None,
                 body: bytes | str) -> tuple[int, str, tuple[tuple[str, str], ...], bytes]:
    """reply() and t_reply(): the checked status, reason, headers and body."""
    code = int(status)
    if not 100 <= code <= 699:
        raise ValueError(f"bad status {status!r}")
    if "\r" in reason or "\n" in reason:
        raise ValueError("reason must be one line")
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    hdrs = tuple([_split_hf(k, v) for k, v in pairs])
    return code, reason, hdrs, body.encode() if isinstance(body, str) else body


@functools.cache
def _registrar_nat():
    """modules/registrar/nat.py, imported on first use (a proxy without the NAT helpers does
    not load the registrar) and then kept: an import statement per call costs importlib's
    name resolution every time (the registrar route asks for every request and reply)."""
    from ..modules.registrar import nat

    return nat


class _CallLog(logging.LoggerAdapter):
    def process(self, msg, kwargs):  # type: ignore[override]
        return f"call_id={self.extra['call_id']} {msg}", kwargs


_HF_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _split_hf(name: str, value: str | None) -> tuple[str, str]:
    """`append_hf("X-A", "1")` or Kamailio style `append_hf("X-A: 1")`."""
    if value is None:
        name, colon, value = name.partition(":")
        if not colon:
            raise ValueError("append_hf needs 'Name: value' or a name and a value")
        value = value.strip().removesuffix("\r\n")
    name = name.strip()
    if not name or not _HF_NAME.fullmatch(name):
        raise ValueError(f"bad header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError("header value must be one line")
    return name, value


class _MessageView:
    """Header access shared by requests and replies."""

    _msg: Request | Response

    def __init__(self, src: Source) -> None:
        self.actions: list[Action] = []
        self._src = src
        self._log: _CallLog | None = None

    # source of the message
    @property
    def src_ip(self) -> str:
        return self._src.ip

    @property
    def src_port(self) -> int:
        return self._src.port

    @property
    def proto(self) -> str:
        """Transport it arrived over: udp, tcp, tls."""
        return self._src.proto

    @property
    def call_id(self) -> str:
        return self._msg.call_id

    @property
    def cseq(self) -> int:
        return self._msg.cseq.seq

    @property
    def body(self) -> bytes:
        return self._msg.body

    @property
    def from_uri(self) -> str:
        return str(self._msg.from_.uri)

    @property
    def from_user(self) -> str | None:
        return self._msg.from_.uri.user

    @property
    def from_host(self) -> str:
        return self._msg.from_.uri.host

    @property
    def from_tag(self) -> str | None:
        return self._msg.from_.tag

    @property
    def to_uri(self) -> str:
        return str(self._msg.to.uri)

    @property
    def to_user(self) -> str | None:
        return self._msg.to.uri.user

    @property
    def to_host(self) -> str:
        return self._msg.to.uri.host

    @property
    def to_tag(self) -> str | None:
        return self._msg.to.tag

    def get_hf(self, name: str) -> str | None:
        """First value of a header, or None."""
        return self._msg.get(name)

    def get_hfs(self, name: str) -> list[str]:
        """All values of a header (list headers split at commas)."""
        return self._msg.get_all(name)

    def has_hf(self, name: str) -> bool:
        return self._msg.has(name)

    def append_hf(self, name: str, value: str | None = None) -> None:
        """Append a header: `append_hf("X-Edge", "1")` or `append_hf("X-Edge: 1")`."""
        name, value = _split_hf(name, value)
        self._msg.add(name, value)

    def remove_hf(self, name: str) -> int:
        """Remove every line of a header; returns how many were removed."""
        return self._msg.remove(name)

    def nat_detected(self) -> list[str]:
        """Why the sender looks NATed (like Kamailio's nat_uac_test): `via_address`,
        `via_port` (requests), `contact_private`, `contact_address`; empty when it does not."""
        reasons = _registrar_nat().nat_reasons(self._msg, self.src_ip, self.src_port,
                                               self.proto)
        if not self._msg.is_request:  # the top Via of a reply is ours: only Contact counts
            reasons = [r for r in reasons if r.startswith("contact")]
        return reasons

    def fix_nated_contact(self) -> bool:
        """Point the first Contact at the address the message came from, so that requests
        inside the dialog reach a UA behind NAT (Kamailio's fix_nated_contact). Returns
        whether the Contact changed."""
        return _registrar_nat().fix_contact(self._msg, self.src_ip, self.src_port)

    def drop(self, why: str = "") -> Drop:
        action = Drop(why)
        self.actions.append(action)
        return action

    @property
    def log(self) -> logging.LoggerAdapter:
        """Logger that prefixes every line with the message's Call-ID."""
        if self._log is None:
            self._log = _CallLog(_script_log, {"call_id": self._msg.call_id})
        return self._log


class RequestMsg(_MessageView):
    """A request inside `request_route`."""

    def __init__(self, msg: Request, src: Source, core: ProxyCore, listener: str = "") -> None:
        super().__init__(src)
        self._msg = msg
        self._core = core
        self.dst_uri: URI | None = None
        self.listener = listener  # the receiving socket, "udp:127.0.0.1:5060"

    @property
    def raw(self) -> Request:
        """The underlying sipedge.sip.Request (for anything this API does not cover)."""
        return self._msg

    @property
    def method(self) -> str:
        return self._msg.method

    def is_method(self, *methods: str) -> bool:
        """`is_method("INVITE", "BYE")` or Kamailio style `is_method("INVITE|BYE")`."""
        wanted = {m.upper() for spec in methods for m in spec.split("|")}
        return self._msg.method.upper() in wanted

    @property
    def loose_routed(self) -> bool:
        """True when the request arrived with a Route entry of ours (which was removed),
        i.e. Record-Route brought it here; like Kamailio's loose_route() returning true."""
        return self._msg.loose_routed

    @property
    def in_dialog(self) -> bool:
        """True for requests inside a dialog (To has a tag), like Kamailio's has_totag()."""
        return self._msg.to.tag is not None

    # Request-URI
    @property
    def ruri(self) -> str:
        return self._msg.uri_text

    @property
    def ruri_user(self) -> str | None:
        return self._msg.uri.user

    @property
    def ruri_host(self) -> str:
        return self._msg.uri.host

    @property
    def ruri_port(self) -> int | None:
        return self._msg.uri.port

    def set_ruri(self, uri: str) -> None:
        self._msg.uri = _parse_target(uri)

    def set_ruri_user(self, user: str | None) -> None:
        self._msg.uri = self._sip_ruri().with_(user=user or None, password=None)

    def set_ruri_host(self, host: str) -> None:
        uri = self._sip_ruri()
        _parse_target(str(uri.with_(host=host)))  # validates the host
        self._msg.uri = uri.with_(host=host)

    def set_ruri_port(self, port: int | None) -> None:
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"bad port {port!r}")
        self._msg.uri = self._sip_ruri().with_(port=None if port is None else int(port))

    def _sip_ruri(self) -> URI:
        uri = self._msg.uri
        if not uri.is_sip:
            raise ValueError(f"Request-URI {uri} is not a SIP URI")
        return uri

    def set_dst_uri(self, uri: str) -> None:
        """Send to this URI without changing the Request-URI (Kamailio's $du)."""
        self.dst_uri = _parse_target(uri)

    def force_send_socket(self, socket: str) -> None:
        """Send the request from this listener, named as in `msg.listener`
        ("udp:192.0.2.1:5060"; Kamailio's force_send_socket). The registrar's lookup does this
        for a contact, so requests reach a UA behind NAT from the socket it registered
        through. A listener that does not exist or does not fit the next hop's transport is
        ignored (logged) and the usual choice is made."""
        proto, sep1, rest = socket.partition(":")
        host, sep2, port = rest.rpartition(":")
        if not (sep1 and sep2 and host and port.isdigit()):
            raise ValueError(f"force_send_socket: want proto:address:port, got {socket!r}")
        self._msg.send_socket = f"{proto.lower()}:{host}:{port}"

    @property
    def send_socket(self) -> str | None:
        """The listener forced by `force_send_socket()`, or None."""
        return self._msg.send_socket

    def record_route(self, on: bool = True) -> None:
        """Insert Record-Route for this request when it is relayed (Kamailio's
        record_route()), whatever `[proxy] record_route` says; `on=False` leaves it out
        for this request even when `[proxy] record_route` is on."""
        self._msg.record_route = bool(on)

    def is_myself(self, uri: str | None = None) -> bool:
        """Is the URI (default: the Request-URI) this proxy: one of its listeners (host and
        port), or one of its configured domains."""
        target = self._msg.uri if uri is None else _parse_target(uri)
        return self._core.is_myself_or_domain(target)

    # actions
    def forward(self, uri: str | None = None) -> Forward:
        """Relay statelessly: to `uri`, else to the destination URI, Route or R-URI."""
        target = _parse_target(uri) if uri else self.dst_uri
        action = Forward(target) if target is not None else _FORWARD_BY_ROUTE
        self.actions.append(action)
        return action

    def reply(self, status: int, reason: str,
              headers: dict[str, str] | list[tuple[str, str]] | tuple | None = None,
              body: bytes | str = b"", content_type: str | None = None) -> Reply:
        """Answer statelessly, with extra headers and an optional body. `headers` is a dict
        or a list of (name, value) pairs (a name may repeat: two WWW-Authenticate)."""
        action = Reply(*_reply_parts(status, reason, headers, body), content_type)
        self.actions.append(action)
        return action


    # -- transactions (t_relay and friends); see docs/transactions.md ------------------

    _tm: TmState | None = None
    # (username, domain) of the subscriber ksr.auth.check() authenticated (io/modules.py)
    auth_subscriber: tuple[str, str] | None = None

    @property
    def tm(self) -> TmState:
        if self._tm is None:
            self._tm = TmState()
        return self._tm

    @property
    def vars(self) -> dict:
        """Per-transaction variables: a dict the script (and modules such as the dispatcher,
        under "dispatcher.selection") fills in request_route; the failure route of the same
        transaction gets the same dict (Kamailio's $avp / $xavp for this use)."""
        return self.tm.vars

    def t_relay(self, uri: str | None = None) -> Relay:
        """Relay statefully: to `uri`, else to the destination URI, Route or R-URI; plus every
        branch added with append_branch(). Called from a failure route it starts the next
        round of branches (serial forking)."""
        target = _parse_target(uri) if uri else self.dst_uri
        action = Relay(target)
        self.actions.append(action)
        self.tm  # noqa: B018 - a Relay always has transaction state
        return action

    def append_branch(self, uri: str | None = None, *, dst_uri: str | None = None,
                      path: tuple[str, ...] | list[str] = (), socket: str | None = None) -> None:
        """Add a branch for parallel forking: a copy of the request with this R-URI (default:
        the current R-URI), sent to `dst_uri` if given and through the `path` Route values
        (a registered Path), from listener `socket` (as `force_send_socket()`) if given.
        t_relay() sends all branches at once."""
        self.tm.branches.append(_parse_target(uri) if uri else self._msg.uri)
        self.tm.branch_opts.append((_parse_target(dst_uri) if dst_uri else None,
                                    tuple(path), socket or None))

    def t_on_failure(self, name: str) -> None:
        """Run script function `name(msg)` when every branch ended without a 2xx."""
        self.tm.routes["failure"] = _route_name(name)

    def t_on_reply(self, name: str) -> None:
        """Run script function `name(reply)` for every reply of this transaction."""
        self.tm.routes["reply"] = _route_name(name)

    def t_on_branch(self, name: str) -> None:
        """Run script function `name(msg)` on each branch's copy of the request before it is
        sent; `msg.drop()` there drops the branch."""
        self.tm.routes["branch"] = _route_name(name)

    def t_reply(self, status: int, reason: str,
                headers: dict[str, str] | list[tuple[str, str]] | tuple | None = None,
                body: bytes | str = b"", content_type: str | None = None) -> TReply:
        """Answer statefully (retransmissions of the request are absorbed). In a failure
        route this replaces the winning reply."""
        action = TReply(*_reply_parts(status, reason, headers, body), content_type)
        self.actions.append(action)
        return action

    def t_check_status(self, regex: str) -> bool:
        """Failure route: does the winning reply's status match `regex` (whole code)?"""
        reply = self._tm.reply if self._tm is not None else None
        return _check_status(reply.status if reply is not None else None, regex)

    def t_is_canceled(self) -> bool:
        """Failure route: did the caller CANCEL the request?"""
        return self._tm is not None and self._tm.canceled

    @property
    def winning_reply(self) -> "ReplyMsg | None":
        """Failure route: the reply that would go upstream (status, reason, headers)."""
        return self._tm.reply if self._tm is not None else None

    @property
    def reply_status(self) -> int | None:
        """Failure route: status of the winning reply (408 when a branch timed out)."""
        r = self.winning_reply
        return r.status if r is not None else None

    @property
    def branch_index(self) -> int | None:
        """Branch route: index of the branch (0, 1, ... over the whole transaction)."""
        return self._tm.branch_index if self._tm is not None else None


class ReplyMsg(_MessageView):
    """A reply inside `reply_route`; changes made here go into the forwarded reply."""

    def __init__(self, msg: Response, src: Source) -> None:
        super().__init__(src)
        self._msg = msg

    @property
    def raw(self) -> Response:
        return self._msg

    @property
    def status(self) -> int:
        return self._msg.status

    @property
    def reason(self) -> str:
        return self._msg.reason

    @property
    def method(self) -> str:
        """Method of the request this reply answers (from CSeq)."""
        return self._msg.cseq.method

    def t_check_status(self, regex: str) -> bool:
        """Does this reply's status match `regex` (the whole code, e.g. "404|5[0-9][0-9]")?"""
        return _check_status(self._msg.status, regex)


def _parse_target(uri: str) -> URI:
    try:
        parsed = parse_uri(uri)
    except RemoteProtocolError as exc:
        raise ValueError(f"bad URI {uri!r}: {exc.reason}") from None
    return parsed


@dataclass
class RouteTable:
    """The declarative router used when no script is configured."""

    rules: list[tuple[str, str, URI]] = field(default_factory=list)  # (domain, prefix, dest)
    default: URI | None = None
    # Forward(default), made once (actions are immutable)
    _default_fwd: Forward | None = field(default=None, init=False, repr=False, compare=False)

    def request_route(self, msg: RequestMsg) -> None:
        raw = msg.raw
        dest = self.destination(raw.uri, msg.in_dialog, raw.loose_routed, raw.has("route"),
                                msg._core.is_myself_or_domain)
        if dest is None:
            msg.forward()  # by Route or Request-URI
        elif dest is False:
            msg.reply(404, "Not Found")
        elif dest is self.default:
            fwd = self._default_fwd
            if fwd is None or fwd.uri is not dest:
                fwd = self._default_fwd = Forward(dest)
            msg.actions.append(fwd)
        else:
            msg.actions.append(Forward(dest))

    def destination(self, uri: URI, in_dialog: bool, loose_routed: bool, has_route: bool,
                    is_myself: Callable[[URI], bool]) -> URI | None | bool:
        """The table's decision, shared with the proxy core's byte path
        (`ProxyCore.forward_datagram`): a destination URI, None (forward by Route or
        Request-URI) or False (answer 404)."""
        if in_dialog and (loose_routed or has_route or not is_myself(uri)):
            return None  # in-dialog: follow the Route set or the remote target
        host = uri.host_bare if uri.is_sip else ""
        user = uri.user or ""
        for domain, prefix, dest in self.rules:
            if (not domain or domain.lower() == host) and user.startswith(prefix):
                return dest
        if self.default is not None:
            return self.default
        if is_myself(uri):
            return False
        return None

    def reply_route(self, msg: ReplyMsg) -> None:
        return None
