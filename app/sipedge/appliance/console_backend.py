"""`ConsoleBackend` for the real box: the console thread reaching into the supervisor's loop."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
from collections.abc import Sequence
from typing import Any

from .ringlog import RingLogHandler
from .sdconfig import BootConfigManager

log = logging.getLogger("sipedge.appliance.console")


class SupervisorBackend:
    def __init__(self, sup: Any, loop: asyncio.AbstractEventLoop, source: BootConfigManager,
                 ring: RingLogHandler | None = None,
                 reboot_cmd: Sequence[str] = ("reboot",)) -> None:
        self.sup = sup
        self.loop = loop
        self.source = source
        self.ring = ring
        self.reboot_cmd = list(reboot_cmd)

    def _on_loop(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):  # e.g. update.status runs rauc in a thread
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=60)

    def status(self) -> dict[str, Any]:
        return self._on_loop(self.sup.status)

    def boot_text(self) -> str:
        try:
            return self.source.boot_text()
        except FileNotFoundError:
            return ""

    def check_text(self, text: str) -> list[str]:
        return self.source.full_check(text, running=self.sup.choice.config)

    def lkg_text(self) -> str | None:
        return self.source.lkg_text()

    def write_boot(self, text: str) -> None:
        self.source.write_boot(text)

    def config_errors(self) -> dict[str, Any]:
        return self._on_loop(self.sup.config_errors)

    def apply(self) -> None:
        self.loop.call_soon_threadsafe(self.sup.request, "reload")

    def rpc(self, method: str, params: dict[str, Any]) -> Any:
        # the supervisor's own methods (supervisor.*, watchdog.status, config.apply, ...),
        # exactly the set its RPC socket serves; everything else goes to the proxy
        fn = self.sup.rpc_methods().get(method)
        if fn is not None:
            return self._on_loop(fn, params)
        from ..io.rpc import rpc_call

        return rpc_call(self._ctl(params), method, params or None)

    def _ctl(self, params: dict[str, Any] | None = None) -> str:
        """The control socket of the instance named by `instance=` (popped), else the first."""
        from .instances import first_instance

        config = self.sup.choice.config
        name = params.pop("instance", None) if isinstance(params, dict) else None
        if name is not None:
            if name not in config.instances:
                raise ValueError(f"no instance {name!r} (instances: "
                                 f"{', '.join(config.instances)})")
            return config.instances[name].core.ctl_socket
        return first_instance(config).core.ctl_socket

    def restart(self, name: str | None) -> dict[str, Any]:
        return self._on_loop(self.sup._rpc_restart, [name] if name else [])

    def security(self) -> dict[str, Any] | None:
        """Flood-defence blocks for the status page (None: the proxy or its security module
        is not there)."""
        from ..io.rpc import RpcError, rpc_call

        ctl = self._ctl()
        try:
            blocked = rpc_call(ctl, "sec.blocked", None, timeout=2)
            total = rpc_call(ctl, "stats", None, timeout=2).get("total", {})
            # the status page must not fail on an answer of another shape (an older proxy)
            return {"blocked_now": len(blocked), "sample": [b["ip"] for b in list(blocked)[:3]],
                    "blocks_total": total.get("sec_blocks", 0),
                    "unblocks_total": total.get("sec_unblocks", 0)}
        except (RpcError, OSError, ValueError, AttributeError, TypeError, KeyError):
            return None

    def logs(self, n: int) -> list[str]:
        return self.ring.tail(n) if self.ring is not None else []

    def reboot(self) -> None:
        log.warning("reboot requested from the console")
        subprocess.run(self.reboot_cmd, check=False, timeout=30)

    def media_config(self) -> Any:
        return None if self.sup.media is None else self.sup.media.offer

    def factory_reset(self) -> None:
        """The shipped sipedge.toml back on the boot partition (it listens on every address,
        keeps the console, and its paths are absolute), last-known-good forgotten."""
        from ..config import factory_text

        log.warning("factory reset requested from the console")
        self.source.write_boot(factory_text())
        self.source.forget_lkg()
        self.apply()
