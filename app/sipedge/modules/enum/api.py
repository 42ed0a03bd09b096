"""Script-facing API: `ksr.enum.*`. Every call is async (the route awaits only its own
lookup; other messages keep flowing).

    async def request_route(msg):
        result = await ksr.enum.enum_query(msg)          # rewrites the R-URI when Found
        if not result:
            status, reason = ksr.enum.reply_for(result)  # 404 Not Found / 503 ...
            msg.reply(status, reason)
            return
        msg.t_relay()
"""

from __future__ import annotations

from typing import Any

from .aio import EnumLookup
from .core import DnsFailure, EnumNumberError, EnumResult, Found, NotFound


class EnumApi:
    def __init__(self, lookup: EnumLookup) -> None:
        self._lookup = lookup

    async def lookup(self, number: str, suffix: str | None = None,
                     service: str | None = None) -> EnumResult:
        """Look up any number. A string that is not a number gives NotFound("not a
        number") rather than an exception, so scripts can treat it like a miss."""
        try:
            return await self._lookup.lookup(number, suffix, (service,) if service else None)
        except EnumNumberError:
            return NotFound("not a number", number)

    async def enum_query(self, msg: Any, suffix: str | None = None,
                         service: str | None = None) -> EnumResult:
        """Take the R-URI user as the number; on Found, replace the R-URI with the result."""
        result = await self.lookup(msg.ruri_user or "", suffix, service)
        if isinstance(result, Found):
            msg.set_ruri(result.uri)
        return result

    async def is_from_user_enum(self, msg: Any, suffix: str | None = None,
                                service: str | None = None) -> bool:
        """Is the From user a number with an ENUM record (Kamailio's is_from_user_enum)?"""
        return isinstance(await self.lookup(msg.from_user or "", suffix, service), Found)

    @staticmethod
    def reply_for(result: EnumResult) -> tuple[int, str]:
        """The default route's answer when there is no URI: 404 for no record, 503 for a
        DNS failure."""
        if isinstance(result, DnsFailure):
            return 503, "ENUM Lookup Failed"
        if isinstance(result, NotFound):
            return 404, "Not Found"
        return 200, "OK"
