"""RPC methods `ul.dump`, `ul.show`, `ul.rm` as plain functions over the store.

They are synchronous over a `Store` (the RPC server runs them in a thread, or with an
`AsyncStore` via `AsyncStore.run(fn, ...)`)."""

from __future__ import annotations

from .core import Binding, format_q
from .store import Store


def _binding_dict(b: Binding, now: float) -> dict:
    return {"contact": b.contact, "expires_in_s": b.remaining(now), "q": format_q(b.q),
            "call_id": b.call_id, "cseq": b.cseq, "path": list(b.path), "received": b.received,
            "transport": b.transport, "socket": b.socket, "nat": b.nat,
            "user_agent": b.user_agent, "instance": b.instance, "reg_id": b.reg_id}


def ul_dump(store: Store, now: float) -> dict:
    """Every AOR with its live bindings."""
    out: dict[str, list[dict]] = {}
    for b in store.all_bindings(now):
        out.setdefault(b.aor, []).append(_binding_dict(b, now))
    return {"aors": out, "count": len(out)}


def ul_show(store: Store, aor: str, now: float) -> list[dict]:
    """The live bindings of one AOR (empty list when not registered)."""
    return [_binding_dict(b, now) for b in
            sorted(store.live_bindings(aor, now), key=lambda b: (-b.q, b.contact))]


def ul_rm(store: Store, aor: str) -> int:
    """Delete every binding of an AOR; returns how many were deleted."""
    return store.delete_aor(aor)


RPC = {"ul.dump": ul_dump, "ul.show": ul_show, "ul.rm": ul_rm}
