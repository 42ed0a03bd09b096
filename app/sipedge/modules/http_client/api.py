"""Script-facing API: `ksr.http_client.*`. Every call is async: the route awaits only its own
request, other messages keep flowing.

    async def request_route(msg):                       # the seed's example
        try:
            r = await ksr.http_client.http_get(f"http://10.0.0.5/lookup?user={msg.ruri_user}")
        except ksr.http_client.HttpError as exc:        # timeout, refused, too large, ...
            msg.reply(503, "Lookup Failed")
            return
        msg.reply(200, ksr.http_client.reason_phrase(r.text))

Failures raise `HttpError` subclasses (HttpTimeout, HttpConnectError, HttpProtocolError,
HttpTooLarge); a response of any status is returned, `r.ok` tells 2xx.
"""

from __future__ import annotations

import re

from .client import HttpClient, HttpConnectError, HttpTimeout
from .h1 import HttpError, HttpProtocolError, HttpTooLarge, Response


class HttpClientApi:
    # the failures, reachable from a script as `ksr.http_client.HttpError` etc.
    HttpError = HttpError
    HttpTimeout = HttpTimeout
    HttpConnectError = HttpConnectError
    HttpProtocolError = HttpProtocolError
    HttpTooLarge = HttpTooLarge

    def __init__(self, client: HttpClient) -> None:
        self._client = client

    async def http_get(self, url: str, headers: dict[str, str] | None = None,
                       timeout: float | None = None) -> Response:
        return await self._client.get(url, headers, timeout)

    async def http_post(self, url: str, body: bytes | str, content_type: str = "text/plain",
                        headers: dict[str, str] | None = None,
                        timeout: float | None = None) -> Response:
        return await self._client.post(url, body, content_type, headers, timeout)

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                      body: bytes | str | None = None, timeout: float | None = None) -> Response:
        return await self._client.request(method, url, headers, body, timeout)

    @staticmethod
    def reason_phrase(text: str, limit: int = 128) -> str:
        """Make response text usable as a SIP reason phrase: one line, printable, bounded."""
        one = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
        return one[:limit] or "OK"
