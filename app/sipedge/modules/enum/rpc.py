"""RPC command `enum.lookup number=<e164> [suffix=<domain>] [service=<svc>]`: a diagnostic
lookup through the configured resolvers, returned as a plain dict."""

from __future__ import annotations

from typing import Any, Callable

from .aio import EnumLookup
from .core import DnsFailure, EnumNumberError, Found


def result_dict(result) -> dict[str, Any]:
    if isinstance(result, Found):
        return {"result": "found", "uri": result.uri, "number": result.number,
                "domain": result.domain, "order": result.order,
                "preference": result.preference, "service": result.service}
    if isinstance(result, DnsFailure):
        return {"result": "dns_failure", "name": result.name, "number": result.number}
    return {"result": "not_found", "reason": result.reason, "number": result.number}


async def enum_lookup(lookup: EnumLookup, params: dict[str, Any]) -> dict[str, Any]:
    number = params.get("number") or (params.get("args") or [None])[0]
    if not isinstance(number, (str, int)):
        raise ValueError("enum.lookup needs number=<E.164 number>")
    service = params.get("service")
    try:
        result = await lookup.lookup(str(number), params.get("suffix"),
                                     (service,) if service else None)
    except EnumNumberError as exc:
        raise ValueError(str(exc)) from None
    return result_dict(result)


def methods(lookup: EnumLookup) -> dict[str, Callable[[dict], Any]]:
    return {"enum.lookup": lambda params: enum_lookup(lookup, params)}


# plain functions over the state: enum.lookup(lookup, params) (a coroutine)
RPC = {"enum.lookup": enum_lookup}
