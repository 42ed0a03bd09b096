"""Build SIP requests for module tests."""

from __future__ import annotations

from types import SimpleNamespace

from sipedge.sip.message import Request, parse_message


def request(method: str = "REGISTER", ruri: str = "sip:example.com", *,
            to: str = "<sip:alice@example.com>", from_: str | None = None,
            call_id: str = "c1@host", cseq: int = 1, contacts: list[str] | None = None,
            extra: list[str] | None = None, via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1") -> Request:
    lines = [f"{method} {ruri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             f"To: {to}", f"From: {from_ or to};tag=f1", f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}"]
    lines += [f"Contact: {c}" for c in (contacts or [])]
    lines += extra or []
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


class FakeMsg:
    """The parts of the script's RequestMsg the module APIs use."""

    def __init__(self, raw: Request, src_ip: str = "192.0.2.10", src_port: int = 5060,
                 proto: str = "udp", listener: str = "udp:127.0.0.1:5060") -> None:
        self.raw = raw
        self.src_ip = src_ip
        self.src_port = src_port
        self.proto = proto
        self.listener = listener
        self.branches: list[tuple] = []
        self.dst_uri = None
        self.send_socket = None
        self.tm = SimpleNamespace(main_path=())

    def set_ruri(self, uri: str) -> None:
        self.raw.uri = uri

    def set_dst_uri(self, uri: str) -> None:
        self.dst_uri = uri

    def force_send_socket(self, socket: str) -> None:
        self.send_socket = socket

    def append_branch(self, uri, **kw) -> None:
        self.branches.append((uri, kw))
