"""RPC `uac.*`: the main process asks every worker (io/modules.py control sockets) and
merges. Registrations run in worker 0, so its answer is the one shown; the other workers
keep the same rows for `reg_lookup()`.

Rows never carry a password or HA1 (Registration.status leaves them out)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Ask = Callable[[str, dict], Awaitable[list]]


def _id_params(params: dict) -> dict:
    if "id" in params:
        return {"id": str(params["id"])}
    args = params.get("args") or []
    if not args:
        raise KeyError("id")
    return {"id": str(args[0])}


def main_methods(ask: Ask) -> dict[str, Callable[[dict], Awaitable[Any]]]:
    """The methods of the main process's RPC server; `ask(method, params)` returns every
    worker's result (io/modules.py ask_workers)."""

    async def first(method: str, params: dict) -> Any:
        results = await ask(method, params)
        if not results:
            raise ValueError("no worker answered")
        owner = [r for r in results if isinstance(r, dict) and r.get("registering")]
        return owner[0] if owner else results[0]

    async def reg_list(p: dict) -> dict:
        out = dict(await first("uac.reg_list", {}))
        out.pop("registering", None)
        return out

    async def reg_refresh(p: dict) -> dict:
        return await first("uac.reg_refresh", _id_params(p))

    async def reg_enable(p: dict) -> dict:
        return await first("uac.reg_enable", _id_params(p))

    async def reg_disable(p: dict) -> dict:
        return await first("uac.reg_disable", _id_params(p))

    async def reg_reload(p: dict) -> dict:
        results = await ask("uac.reg_reload", {})
        if not results:
            raise ValueError("no worker answered")
        return {**results[0], "workers": len(results)}

    async def stats(p: dict) -> dict:
        total: dict[str, int] = {}
        results = await ask("uac.stats", {})
        for r in results:
            for k, v in r.items():
                total[k] = total.get(k, 0) + v
        return {**total, "workers": len(results)}

    return {"uac.reg_list": reg_list, "uac.reg_refresh": reg_refresh,
            "uac.reg_enable": reg_enable, "uac.reg_disable": reg_disable,
            "uac.reg_reload": reg_reload, "uac.stats": stats}


RPC: dict[str, Callable[..., Any]] = {}  # every method goes through the workers
