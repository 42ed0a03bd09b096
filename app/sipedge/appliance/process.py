"""Runs the proxy as a child process in its own process group.

The proxy's main process forwards SIGTERM to its workers; SIGKILL goes to the whole group so no
worker outlives a hung main process.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

log = logging.getLogger("sipedge.appliance.process")


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (even by SIGKILL), so a
    restarted supervisor never meets an orphaned proxy holding the SIP ports."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ProxyProcess:
    """One run of the proxy. `wait()` returns the exit status (negative: killed by signal)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env=self.env,
            cwd=self.cwd, preexec_fn=_die_with_parent)
        log.info("proxy started pid=%d argv=%s", self._proc.pid, " ".join(self.argv))

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    def _signal_group(self, sig: int) -> None:
        if not self.running:
            return
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self._proc.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM to the main process only; it stops its workers itself."""
        if self.running:
            assert self._proc is not None
            try:
                self._proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL to the whole process group."""
        self._signal_group(signal.SIGKILL)

    def reap_group(self) -> None:
        """After the main process exited: kill any worker it left behind."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
