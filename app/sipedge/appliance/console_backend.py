"""`ConsoleBackend` for the real box: the console thread reaching into the supervisor's loop."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
from collections.abc import Sequence
from typing import Any

from ..config import DEFAULT_TOML
from .console import RingLogHandler
from .sdconfig import BootConfigManager

log = logging.getLogger("sipedge.appliance.console")

SUPERVISOR_METHODS = ("supervisor.", "config.errors", "update.")


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
        return [str(i) for i in self.source.check_text(text)]

    def write_boot(self, text: str) -> None:
        self.source.write_boot(text)

    def config_errors(self) -> dict[str, Any]:
        return self._on_loop(self.sup.config_errors)

    def apply(self) -> None:
        self.loop.call_soon_threadsafe(self.sup.request, "reload")

    def rpc(self, method: str, params: dict[str, Any]) -> Any:
        if method.startswith(SUPERVISOR_METHODS):
            fn = self.sup.rpc_methods().get(method)
            if fn is None:
                raise ValueError(f"no such supervisor method {method}")
            return self._on_loop(fn, params)
        from ..io.rpc import rpc_call

        return rpc_call(self.sup.choice.config.core.ctl_socket, method, params or None)

    def logs(self, n: int) -> list[str]:
        return self.ring.tail(n) if self.ring is not None else []

    def reboot(self) -> None:
        log.warning("reboot requested from the console")
        subprocess.run(self.reboot_cmd, check=False, timeout=30)

    def media_config(self) -> Any:
        return None if self.sup.media is None else self.sup.media.offer

    def factory_reset(self) -> None:
        log.warning("factory reset requested from the console")
        self.source.write_boot(DEFAULT_TOML)
        self.source.forget_lkg()
        self.apply()
