"""Runs the proxy as a child process in its own process group.

The proxy's main process forwards SIGTERM to its workers; SIGKILL goes to the whole group so no
worker outlives a hung main process.

The proxy's stdout and stderr come back through a pipe: each line goes to the supervisor's log
(logger `sipedge.proxy`, so `logs` on the console and syslog show both programs) and the
last `cannot start` / ERROR line is kept as `last_error`, the cause a status can name.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

log = logging.getLogger("sipedge.appliance.process")
proxy_log = logging.getLogger("sipedge.proxy")

# "2026-12-07 00:50:01,123 ERROR sipedge.app[123]: cannot start: ..." (app.setup_logging)
_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                   r"(\S+?): (.*)$")
MAX_LINE = 2000


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
        self._reader: asyncio.Task[None] | None = None
        self.last_error: str | None = None  # the proxy's last ERROR line (message only)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=self.env,
            cwd=self.cwd, preexec_fn=_die_with_parent, limit=MAX_LINE * 4)
        log.info("proxy started pid=%d argv=%s", self._proc.pid, " ".join(self.argv))
        self._reader = asyncio.ensure_future(self._read_output(self._proc.stdout))

    async def _read_output(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the limit: skip what is buffered
                raw = b"(overlong line)\n"
            except OSError:
                return
            if not raw:
                return
            self.on_line(raw.decode("utf-8", "replace").rstrip()[:MAX_LINE])

    def on_line(self, line: str) -> None:
        m = _LINE.match(line)
        if m is None:
            proxy_log.info("%s", line)
            return
        level, name, message = m.groups()
        proxy_log.log(getattr(logging, level), "%s: %s", name, message)
        if level in ("ERROR", "CRITICAL"):
            self.last_error = message

    async def wait(self) -> int:
        assert self._proc is not None
        rc = await self._proc.wait()
        if self._reader is not None:  # the pipe's last lines (the reason of an exit)
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            except asyncio.TimeoutError:  # a worker still holds the pipe: do not wait
                pass
        return rc

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
