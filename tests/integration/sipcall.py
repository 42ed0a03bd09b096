"""A tiny SIP UAC over UDP for the integration tests: INVITE through the proxy, read the
replies up to the final one, then ACK and BYE straight to the answering UAS (its Contact),
so that SIPp UAS instances see complete calls. Every wait is bounded."""

from __future__ import annotations

import re
import socket
import time
import uuid
from dataclasses import dataclass


@dataclass
class CallResult:
    status: int | None  # final status, None: no final reply in time
    reason: str = ""
    contact_port: int | None = None  # the UAS that answered (SIPp puts its port in Contact)
    reply: str = ""


def _header(text: str, name: str) -> str | None:
    m = re.search(rf"^{name}\s*:\s*(.*)$", text, re.I | re.M)
    return m.group(1).strip() if m else None


def call(proxy_port: int, user: str = "bob", *, from_user: str = "alice",
         timeout: float = 5.0, ip: str = "127.0.0.1", hang_up: bool = True,
         src_port: int = 0) -> CallResult:
    """`src_port`: a fixed source port keeps every call on one proxy worker (SO_REUSEPORT
    hashes the addresses), which per-worker state such as a round-robin cursor needs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, src_port))
        lport = s.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        cid = f"{uuid.uuid4().hex}@{ip}"
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        common = (f"From: <sip:{from_user}@localhost>;tag={tag}\r\n"
                  f"Call-ID: {cid}\r\nMax-Forwards: 70\r\n")
        invite = (f"INVITE sip:{user}@localhost SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {ip}:{lport};branch={branch};rport\r\n{common}"
                  f"To: <sip:{user}@localhost>\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:{from_user}@{ip}:{lport}>\r\nContent-Length: 0\r\n\r\n")
        s.sendto(invite.encode(), (ip, proxy_port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return CallResult(None)
            s.settimeout(left)
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                return CallResult(None)
            text = data.decode(errors="replace")
            m = re.match(r"SIP/2.0 (\d{3}) ([^\r\n]*)", text)
            if not m or "INVITE" not in (_header(text, "CSeq") or ""):
                continue
            status = int(m.group(1))
            if status < 200:
                continue
            contact = _header(text, "Contact") or _header(text, "m") or ""
            cm = re.search(r"sip:[^@>;]*@?[\d.]+:(\d+)", contact)
            result = CallResult(status, m.group(2), int(cm.group(1)) if cm else None, text)
            if status >= 300:
                ack_to = _header(text, "To")
                s.sendto((f"ACK sip:{user}@localhost SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP {ip}:{lport};branch={branch};rport\r\n{common}"
                          f"To: {ack_to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                          ).encode(), (ip, proxy_port))
            elif hang_up and result.contact_port:
                to = _header(text, "To")
                target = (ip, result.contact_port)
                for method, seq in (("ACK", 1), ("BYE", 2)):
                    b = "z9hG4bK" + uuid.uuid4().hex[:12]
                    s.sendto((f"{method} sip:{user}@{ip}:{result.contact_port} SIP/2.0\r\n"
                              f"Via: SIP/2.0/UDP {ip}:{lport};branch={b};rport\r\n{common}"
                              f"To: {to}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
                              ).encode(), target)
            return result


def request(proxy_port: int, user: str, method: str = "MESSAGE", *, from_user: str = "alice",
            timeout: float = 5.0, ip: str = "127.0.0.1") -> CallResult:
    """One non-INVITE request through the proxy; its final reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        lport = s.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        msg = (f"{method} sip:{user}@localhost SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {ip}:{lport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
               f"From: <sip:{from_user}@localhost>;tag={tag}\r\nTo: <sip:{user}@localhost>\r\n"
               f"Call-ID: {uuid.uuid4().hex}@{ip}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
               f"Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), (ip, proxy_port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                break
            text = data.decode(errors="replace")
            m = re.match(r"SIP/2.0 (\d{3}) ([^\r\n]*)", text)
            if m and int(m.group(1)) >= 200:
                return CallResult(int(m.group(1)), m.group(2), None, text)
        return CallResult(None)
