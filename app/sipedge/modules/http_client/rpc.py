"""RPC command `http_client.stats`: requests made, connections opened and idle."""

from __future__ import annotations

from typing import Any, Callable

from .client import HttpClient


def http_client_stats(client: HttpClient) -> dict[str, int]:
    return {"requests": client.requests, "connections_opened": client.connections_opened,
            "idle_connections": client.idle_connections()}


def methods(client: HttpClient) -> dict[str, Callable[[dict], Any]]:
    return {"http_client.stats": lambda params: http_client_stats(client)}


# plain functions over the state: http_client.stats(client)
RPC = {"http_client.stats": http_client_stats}
