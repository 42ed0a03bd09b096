"""HTTP/1.1 client framing, sans-IO (RFC 9112): request bytes out, response bytes in.

    data = build_request("GET", "/x", "example.com", [("Accept", "*/*")], b"")
    p = ResponseParser("GET", max_head_bytes=16384, max_body_bytes=1 << 20)
    p.feed(chunk) ...                  # until p.done; p.feed(b"") signals end of stream
    p.response                         # Response(status, reason, headers, body)
    p.keep_alive                       # may the connection be reused?

Bodies are delimited by Content-Length, chunked transfer coding, or the end of the stream
(then the connection is not reused). Responses to HEAD, 1xx, 204 and 304 have no body;
interim 1xx responses are skipped. Every size is bounded: a response that exceeds a limit
raises `HttpTooLarge`, anything malformed `HttpProtocolError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import EdgeError

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")


class HttpError(EdgeError):
    """Root of the HTTP client's errors."""


class HttpProtocolError(HttpError):
    """The server sent something that is not HTTP/1.x."""


class HttpTooLarge(HttpError):
    """The response exceeds a configured size limit."""


@dataclass(frozen=True)
class Response:
    """An HTTP response. Unpacks as `(status, headers, body)`."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None

    def header_dict(self) -> dict[str, str]:
        """Lower-case names; repeated headers joined with ", "."""
        out: dict[str, str] = {}
        for k, v in self.headers:
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    @property
    def text(self) -> str:
        charset = "utf-8"
        ctype = self.header("content-type") or ""
        m = re.search(r"charset=\"?([A-Za-z0-9._-]+)", ctype)
        if m:
            charset = m.group(1)
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __iter__(self):
        return iter((self.status, self.headers, self.body))


def check_header(name: str, value: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad header name {name!r}")
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"header {name} has a line break")


def build_request(method: str, target: str, host: str, headers: list[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """Serialise a request. `Host` and `Content-Length` are added unless given."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"bad method {method!r}")
    if not target or any(c in target for c in " \r\n\x00"):
        raise ValueError(f"bad request target {target!r}")
    names = {k.lower() for k, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host}")
    for k, v in headers:
        check_header(k, v)
        lines.append(f"{k}: {v}")
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


class ResponseParser:
    """Incremental parser of one response (see the module doc)."""

    def __init__(self, method: str, *, max_head_bytes: int = 16384,
                 max_body_bytes: int = 1 << 20, max_headers: int = 100) -> None:
        self.method = method.upper()
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_headers
        self._buf = bytearray()
        self._state = "head"  # head, body_length, body_chunked, body_close, done
        self._remaining = 0
        self._chunk_state = "size"  # size, data, data_crlf, trailer
        self._body = bytearray()
        self._head: tuple[int, str, tuple[tuple[str, str], ...], str] | None = None
        self.keep_alive = False
        self.response: Response | None = None

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def started(self) -> bool:
        """Has any byte of a response arrived (a reused connection that fails before this
        may be retried)?"""
        return bool(self._buf) or self._head is not None or self._state != "head"

    def feed(self, data: bytes) -> None:
        """Bytes from the connection; `b""` means the server closed it."""
        if self._state == "done":
            return
        eof = not data
        self._buf += data
        while not self.done:
            before = (self._state, len(self._buf))
            self._step(eof)
            if (self._state, len(self._buf)) == before:
                break
        if eof and not self.done:
            raise HttpProtocolError("connection closed before the response was complete")

    def _step(self, eof: bool) -> None:
        if self._state == "head":
            self._parse_head()
        elif self._state == "body_length":
            take = min(self._remaining, len(self._buf))
            self._body += self._buf[:take]
            del self._buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._finish()
        elif self._state == "body_close":
            self._append(self._buf)
            self._buf.clear()
            if eof:
                self._finish()
        elif self._state == "body_chunked":
            self._parse_chunked()

    def _append(self, data: bytes | bytearray) -> None:
        if len(self._body) + len(data) > self.max_body_bytes:
            raise HttpTooLarge(f"response body larger than {self.max_body_bytes} bytes")
        self._body += data

    def _parse_head(self) -> None:
        while self._buf.startswith(b"\r\n"):  # stray CRLF before a response
            del self._buf[:2]
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > self.max_head_bytes:
                raise HttpTooLarge(f"response head larger than {self.max_head_bytes} bytes")
            return
        if end > self.max_head_bytes:
            raise HttpTooLarge(f"response head larger than {self.max_head_bytes} bytes")
        text = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[:end + 4]
        lines = text.split("\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        if m is None:
            raise HttpProtocolError(f"bad status line {lines[0][:80]!r}")
        minor, status, reason = int(m.group(1)), int(m.group(2)), m.group(3) or ""
        if len(lines) - 1 > self.max_headers:
            raise HttpTooLarge(f"more than {self.max_headers} response headers")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise HttpProtocolError(f"bad header line {line[:80]!r}")
            headers.append((name, value.strip(" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise HttpProtocolError("unexpected protocol switch")
            return  # interim response: the final one follows
        hdrs = tuple(headers)
        self._head = (status, reason, hdrs, f"1.{minor}")
        conn = ",".join(v for k, v in hdrs if k.lower() == "connection").lower()
        tokens = {t.strip() for t in conn.split(",")}
        self.keep_alive = ("close" not in tokens) and (minor == 1 or "keep-alive" in tokens)
        te = ",".join(v for k, v in hdrs if k.lower() == "transfer-encoding").lower()
        lengths = {v.strip() for k, v in hdrs if k.lower() == "content-length"}
        if self.method == "HEAD" or status in (204, 304):
            self._finish()
        elif te:
            if te.split(",")[-1].strip() != "chunked":
                self.keep_alive = False
                self._state = "body_close"
            else:
                self._state = "body_chunked"
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise HttpProtocolError("bad Content-Length")
            n = int(next(iter(lengths)))
            if n > self.max_body_bytes:
                raise HttpTooLarge(f"response body of {n} bytes is larger than "
                                   f"{self.max_body_bytes}")
            self._remaining = n
            self._state = "body_length"
            if n == 0:
                self._finish()
        else:
            self.keep_alive = False
            self._state = "body_close"

    def _parse_chunked(self) -> None:
        if self._chunk_state == "size":
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 1024:
                    raise HttpProtocolError("chunk size line too long")
                return
            line = bytes(self._buf[:end]).decode("latin-1").split(";", 1)[0].strip()
            del self._buf[:end + 2]
            if not _HEX.fullmatch(line):
                raise HttpProtocolError(f"bad chunk size {line[:20]!r}")
            size = int(line, 16)
            if size == 0:
                self._chunk_state = "trailer"
            else:
                if len(self._body) + size > self.max_body_bytes:
                    raise HttpTooLarge(f"response body larger than {self.max_body_bytes} bytes")
                self._remaining = size
                self._chunk_state = "data"
        elif self._chunk_state == "data":
            take = min(self._remaining, len(self._buf))
            self._append(self._buf[:take])
            del self._buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._chunk_state = "data_crlf"
        elif self._chunk_state == "data_crlf":
            if len(self._buf) < 2:
                return
            if self._buf[:2] != b"\r\n":
                raise HttpProtocolError("chunk not followed by CRLF")
            del self._buf[:2]
            self._chunk_state = "size"
        elif self._chunk_state == "trailer":
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > self.max_head_bytes:
                    raise HttpTooLarge("trailer too large")
                return
            del self._buf[:end + 2]
            if end == 0:
                self._finish()

    def _finish(self) -> None:
        assert self._head is not None
        status, reason, hdrs, _ = self._head
        self.response = Response(status, reason, hdrs, bytes(self._body))
        self._state = "done"
        if self._buf:  # bytes after the response: the connection is not in a known state
            self.keep_alive = False
