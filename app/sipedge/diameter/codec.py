"""RFC 6733 message codec: the 20-byte header, AVPs (vendor-specific, grouped) and a stream
framer for TCP/SCTP.

Values stay raw bytes in `Avp.data`; the dictionary (`dictionary.py`) turns them into Python
values on demand (`Avp.value`, `Message.get`). An AVP the dictionary does not know is kept
verbatim and re-encoded byte for byte (the dnspython `GenericRdata` idea). Decoding is bounded:
an AVP length can never make the parser read past its slice, and grouped AVPs nest at most
`MAX_DEPTH` deep.

Errors: everything wrong in received bytes raises `DiameterDecodeError` (a
`RemoteProtocolError`) carrying the result code to answer with (5015 invalid message length,
5014 invalid AVP length, 3008 invalid header bits, 3009 invalid AVP bits (an unknown AVP flag),
5004 invalid AVP value) and, where the RFC asks for it, the Failed-AVP content. `FramingError` means the stream
cannot be resynchronised: the connection must be closed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import LocalProtocolError, RemoteProtocolError

VERSION = 1
HEADER_LEN = 20
MAX_DEPTH = 16
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20

# header flags
FLAG_R = 0x80  # request
FLAG_P = 0x40  # proxiable
FLAG_E = 0x20  # error
FLAG_T = 0x10  # potentially retransmitted
FLAGS_RESERVED = 0x0F

# AVP flags
AVP_V = 0x80  # vendor id present
AVP_M = 0x40  # mandatory
AVP_P = 0x20  # protected (historic)
AVP_RESERVED = 0x1F

# result codes used by the codec and the base protocol
SUCCESS = 2001
COMMAND_UNSUPPORTED = 3001
UNABLE_TO_DELIVER = 3002
REALM_NOT_SERVED = 3003
TOO_BUSY = 3004
LOOP_DETECTED = 3005
APPLICATION_UNSUPPORTED = 3007
INVALID_HDR_BITS = 3008
INVALID_AVP_BITS = 3009
UNKNOWN_PEER = 3010
AVP_UNSUPPORTED = 5001
INVALID_AVP_VALUE = 5004
MISSING_AVP = 5005
NO_COMMON_APPLICATION = 5010
UNABLE_TO_COMPLY = 5012
INVALID_AVP_LENGTH = 5014
INVALID_MESSAGE_LENGTH = 5015


class DiameterDecodeError(RemoteProtocolError):
    """Received bytes are not a valid Diameter message. `result_code` is what to answer
    with; `failed_avp` the raw AVP(s) for the Failed-AVP (b"" when none applies)."""

    def __init__(self, reason: str, result_code: int, failed_avp: bytes = b"") -> None:
        super().__init__(reason, status_hint=result_code)
        self.result_code = result_code
        self.failed_avp = failed_avp


class FramingError(DiameterDecodeError):
    """The stream is out of sync (bad version, length below 20 or above the limit): close."""


def _pad(n: int) -> int:
    return (n + 3) & ~3


@dataclass(slots=True)
class Avp:
    """One AVP. `data` is the value as on the wire (without padding). `children` is filled for
    grouped AVPs decoded through the dictionary; encoding a grouped AVP uses `children` when
    set, else `data`."""

    code: int
    data: bytes = b""
    flags: int = AVP_M
    vendor: int = 0
    children: list[Avp] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFFFFFF or not 0 <= self.vendor <= 0xFFFFFFFF:
            raise LocalProtocolError("AVP code and vendor id are 32-bit unsigned")
        if self.vendor:
            self.flags |= AVP_V
        elif self.flags & AVP_V:
            raise LocalProtocolError("AVP with the V bit needs a vendor id")

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_M)

    def payload(self) -> bytes:
        if self.children is not None:
            return b"".join(c.encode() for c in self.children)
        return self.data

    def encode(self) -> bytes:
        data = self.payload()
        hlen = 12 if self.flags & AVP_V else 8
        length = hlen + len(data)
        if length > 0xFFFFFF:
            raise LocalProtocolError("AVP longer than 2^24 bytes")
        head = struct.pack("!IB", self.code, self.flags) + length.to_bytes(3, "big")
        if self.flags & AVP_V:
            head += struct.pack("!I", self.vendor)
        return head + data + b"\0" * (_pad(length) - length)

    def group(self) -> list[Avp]:
        """The inner AVPs of a grouped AVP (decoded from `data` on first use)."""
        if self.children is None:
            self.children = decode_avps(self.data, depth=1)
        return self.children

    def find(self, code: int, vendor: int = 0) -> Avp | None:
        for a in self.group():
            if a.code == code and a.vendor == vendor:
                return a
        return None


def _stub(code: int, flags: int, vendor: int) -> bytes:
    hlen = 12 if vendor else 8
    head = struct.pack("!IB", code, (flags & ~AVP_V) | (AVP_V if vendor else 0))
    return head + (hlen + 4).to_bytes(3, "big") + (struct.pack("!I", vendor) if vendor else b"") \
        + b"\0" * 4


def decode_avps(buf: bytes | memoryview, depth: int = 0, base: int = 0) -> list[Avp]:
    """Decode a run of AVPs. `base` is the offset of `buf` in the message (for errors)."""
    if depth > MAX_DEPTH:
        raise DiameterDecodeError("grouped AVPs nested too deep", INVALID_AVP_VALUE)
    out: list[Avp] = []
    mv = memoryview(buf)
    n = len(mv)
    pos = 0
    while pos < n:
        if n - pos < 8:
            raise DiameterDecodeError(f"truncated AVP header at offset {base + pos}",
                                      INVALID_AVP_LENGTH)
        code, flags = struct.unpack_from("!IB", mv, pos)
        length = int.from_bytes(mv[pos + 5:pos + 8], "big")
        hlen = 12 if flags & AVP_V else 8
        vendor = (struct.unpack_from("!I", mv, pos + 8)[0]
                  if flags & AVP_V and n - pos >= 12 else 0)
        if length < hlen or pos + length > n:
            # RFC 6733 7.5: the Failed-AVP holds the offending AVP's header with a zero-filled
            # payload (a length that overruns the message cannot be echoed as is)
            raise DiameterDecodeError(
                f"AVP {code} at offset {base + pos}: bad length {length}", INVALID_AVP_LENGTH,
                _stub(code, flags, vendor))
        if flags & AVP_RESERVED:
            raise DiameterDecodeError(f"AVP {code}: reserved flag bits set", INVALID_AVP_BITS,
                                      bytes(mv[pos:pos + _pad(length)]).ljust(_pad(length), b"\0"))
        data = bytes(mv[pos + hlen:pos + length])
        avp = Avp.__new__(Avp)
        avp.code, avp.data, avp.flags, avp.vendor, avp.children = code, data, flags, vendor, None
        out.append(avp)
        padded = _pad(length)
        if pos + padded > n:
            if depth == 0 or pos + length != n:
                raise DiameterDecodeError(f"AVP {code}: padding missing", INVALID_AVP_LENGTH,
                                          _stub(code, flags, vendor))
            padded = length  # tolerate a missing pad after the last AVP of a group
        pos += padded
    return out


@dataclass(slots=True)
class Message:
    """A Diameter message. `avps` are the top-level AVPs in wire order."""

    code: int
    flags: int = FLAG_R | FLAG_P
    application: int = 0
    hop_by_hop: int = 0
    end_to_end: int = 0
    avps: list[Avp] = field(default_factory=list)
    version: int = VERSION

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_E)

    def encode(self) -> bytes:
        body = b"".join(a.encode() for a in self.avps)
        length = HEADER_LEN + len(body)
        if length > 0xFFFFFF:
            raise LocalProtocolError("message longer than 2^24 bytes")
        return (bytes([self.version]) + length.to_bytes(3, "big") + bytes([self.flags])
                + self.code.to_bytes(3, "big")
                + struct.pack("!III", self.application, self.hop_by_hop, self.end_to_end)
                + body)

    def find(self, code: int, vendor: int = 0) -> Avp | None:
        for a in self.avps:
            if a.code == code and a.vendor == vendor:
                return a
        return None

    def find_all(self, code: int, vendor: int = 0) -> list[Avp]:
        return [a for a in self.avps if a.code == code and a.vendor == vendor]

    def append(self, avp: Avp) -> None:
        self.avps.append(avp)


def decode_header(data: bytes | memoryview) -> tuple[int, int, int, int, int, int, int]:
    """(version, length, flags, code, application, hop-by-hop, end-to-end)."""
    if len(data) < HEADER_LEN:
        raise DiameterDecodeError(f"message shorter than {HEADER_LEN} bytes",
                                  INVALID_MESSAGE_LENGTH)
    v_len, f_code, app, hbh, e2e = struct.unpack_from("!IIIII", data, 0)
    return v_len >> 24, v_len & 0xFFFFFF, f_code >> 24, f_code & 0xFFFFFF, app, hbh, e2e


def decode(data: bytes | memoryview) -> Message:
    """One complete message. Raises DiameterDecodeError."""
    version, length, flags, code, app, hbh, e2e = decode_header(data)
    if version != VERSION:
        raise DiameterDecodeError(f"unsupported version {version}", 5011)
    if length != len(data) or length % 4:
        raise DiameterDecodeError(f"message length field {length}, {len(data)} bytes received",
                                  INVALID_MESSAGE_LENGTH)
    # reserved header bits are ignored (RFC 6733 3); an error bit on a request is invalid
    if flags & FLAG_R and flags & FLAG_E:
        raise DiameterDecodeError("E bit set on a request", INVALID_HDR_BITS)
    avps = decode_avps(memoryview(data)[HEADER_LEN:], base=HEADER_LEN)
    return Message(code, flags, app, hbh, e2e, avps, version)


class Framer:
    """Split a byte stream into messages (`feed(data)` -> complete messages as bytes).

    Only the first 4 bytes (version, length) are trusted for framing: a wrong version, a length
    under 20 or above `max_message_bytes` raises FramingError and the stream is dead. Other
    problems are found by `decode()` and answered."""

    __slots__ = ("_buf", "max_message_bytes")

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self.max_message_bytes = max_message_bytes

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            version = buf[pos]
            length = int.from_bytes(buf[pos + 1:pos + 4], "big")
            if version != VERSION:
                raise FramingError(f"unsupported version {version} (stream out of sync)", 5011)
            if length < HEADER_LEN or length > self.max_message_bytes:
                raise FramingError(f"message length {length} out of range",
                                   INVALID_MESSAGE_LENGTH)
            if n - pos < length:
                break
            out.append(bytes(buf[pos:pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


# ---------------------------------------------------------------- raw (relay) helpers


def set_hop_by_hop(raw: bytes, hbh: int, set_t: bool = False) -> bytes:
    """The message bytes with a new hop-by-hop id (and the T flag), everything else kept."""
    flags = raw[4] | (FLAG_T if set_t else 0)
    return raw[:4] + bytes([flags]) + raw[5:12] + hbh.to_bytes(4, "big") + raw[16:]


def append_avps(raw: bytes, avps: Iterable[Avp]) -> bytes:
    """The message bytes with AVPs appended and the length fixed; the rest byte-identical."""
    extra = b"".join(a.encode() for a in avps)
    length = len(raw) + len(extra)
    return raw[:1] + length.to_bytes(3, "big") + raw[4:] + extra


def iter_avps(avps: list[Avp], code: int, vendor: int = 0) -> Iterator[Avp]:
    return (a for a in avps if a.code == code and a.vendor == vendor)
