"""RPC commands over a `Node`: `diameter.peers`, `diameter.routes`, `diameter.stats`,
`diameter.enable`, `diameter.disable` (plain functions; `now` is passed in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core import Node


def peers(node: Node, now: float) -> dict[str, Any]:
    """Every peer: state, watchdog, realm, common applications, last activity, pending."""
    return {"identity": node.me.origin_host, "realm": node.me.origin_realm,
            "peers": node.snapshot(now)}


def routes(node: Node) -> dict[str, Any]:
    return {"routes": node.routing.snapshot(node.peers),
            "peer_realm_routes": node.routing.peer_realm_routes}


def stats(node: Node) -> dict[str, Any]:
    """Counters per command (rx/tx CER, UAR, ...) and per result code, pending requests."""
    return node.stats_snapshot()


def set_enabled(node: Node, params: dict[str, Any], enabled: bool, now: float) -> dict:
    host = params.get("host") or (params.get("args") or [None])[0]
    if not host:
        raise KeyError("give host=<peer identity>")
    p = node.set_enabled(str(host), enabled, now)
    return {"host": p.name, "enabled": p.enabled, "state": p.state.value}


def methods(node: Node, clock: Callable[[], float],
            after: Callable[[], None] = lambda: None) -> dict[str, Callable[[dict], Any]]:
    """`after` runs once a command changed the node (the adapter sends what it queued)."""

    def changing(enabled: bool) -> Callable[[dict], Any]:
        def call(params: dict) -> dict:
            try:
                return set_enabled(node, params, enabled, clock())
            finally:
                after()
        return call

    return {
        "diameter.peers": lambda params: peers(node, clock()),
        "diameter.routes": lambda params: routes(node),
        "diameter.stats": lambda params: stats(node),
        "diameter.enable": changing(True),
        "diameter.disable": changing(False),
    }


# documented names (sipedgectl lists them); the runtime binds them to the live node
RPC: dict[str, Callable[..., Any]] = {
    "diameter.peers": peers, "diameter.routes": routes, "diameter.stats": stats,
    "diameter.enable": set_enabled, "diameter.disable": set_enabled,
}
