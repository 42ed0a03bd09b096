"""RPC commands `dispatcher.list`, `dispatcher.set_state`, `dispatcher.reload`, as plain
functions over a `Dispatcher` (no I/O: `reload` gets a loader callable and `now`).

`methods(state)` returns them in the shape `sipedge.io.rpc.RpcServer` serves
(`name -> f(params: dict)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .core import Dispatcher, DispatcherError
from .table import DispatcherTable


def dispatcher_list(disp: Dispatcher, now: float) -> dict[str, Any]:
    """Every destination with state, latency (ms) and counters, grouped by set."""
    sets: dict[int, list[dict]] = {}
    for row in disp.snapshot(now):
        sets.setdefault(row["set"], []).append(row)
    return {"source": disp.table.source, "reloads": disp.reloads,
            "sets": [{"set": k, "destinations": v} for k, v in sorted(sets.items())]}


def dispatcher_set_state(disp: Dispatcher, params: dict[str, Any], now: float) -> dict:
    """params: set (int), uri (str), state (active|inactive|probing|disabled)."""
    try:
        set_id = int(params["set"])
        uri = str(params["uri"])
        state = str(params["state"])
    except (KeyError, TypeError, ValueError):
        raise DispatcherError("dispatcher.set_state needs set=<int> uri=<uri> "
                              "state=<active|inactive|probing|disabled>") from None
    new = disp.set_state(set_id, uri, state, now)
    return {"set": set_id, "uri": uri, "state": new.value}


@dataclass
class ReloadGuard:
    """Kamailio's reload_delta: refuse reloads closer together than `min_interval_s`."""

    min_interval_s: float = 5.0
    last: float | None = None

    def check(self, now: float) -> None:
        if self.last is not None and now - self.last < self.min_interval_s:
            raise DispatcherError(f"dispatcher.reload: last reload {now - self.last:.1f}s ago, "
                                  f"wait {self.min_interval_s:g}s between reloads")


def dispatcher_reload(disp: Dispatcher, load: Callable[[], DispatcherTable], now: float,
                      guard: ReloadGuard | None = None) -> dict:
    """Build a new table with `load()` (reads and parses the list file; raises
    DispatcherListError with line numbers) and switch to it, keeping health of unchanged
    destinations. On an error the old table stays."""
    if guard is not None:
        guard.check(now)
    table = load()
    result = disp.reload(table, now)
    if guard is not None:
        guard.last = now
    return {**result, "destinations": len(table), "sets": len(table.sets)}


def methods(disp: Dispatcher, load: Callable[[], DispatcherTable], clock: Callable[[], float],
            guard: ReloadGuard | None = None,
            after_change: Callable[[], None] | None = None) -> dict[str, Callable[[dict], Any]]:
    """RPC method table. `after_change` runs after set_state/reload (e.g. Prober.poke)."""

    def changed(result):
        if after_change is not None:
            after_change()
        return result

    return {
        "dispatcher.list": lambda params: dispatcher_list(disp, clock()),
        "dispatcher.set_state": lambda params: changed(dispatcher_set_state(disp, params,
                                                                             clock())),
        "dispatcher.reload": lambda params: changed(dispatcher_reload(disp, load, clock(),
                                                                      guard)),
    }


# plain functions over the state, like the other modules' RPC tables:
# dispatcher.list(disp, now), dispatcher.set_state(disp, params, now),
# dispatcher.reload(disp, load, now, guard)
RPC = {"dispatcher.list": dispatcher_list, "dispatcher.set_state": dispatcher_set_state,
       "dispatcher.reload": dispatcher_reload}
