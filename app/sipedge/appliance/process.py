"""Runs the proxy as a child process in its own process group.

The proxy's main process forwards SIGTERM to its workers; SIGKILL goes to the whole group so no
worker outlives a hung main process.

The proxy's stdout and stderr come back through a pipe: each line goes to the supervisor's log
(logger `sipedge.proxy`, so `logs` on the console and syslog show both programs) and the
last `cannot start` / ERROR line is kept as `last_error`, the cause a status can name.

A start has two halves: `launch()` forks and execs without an event loop, `attach()` then
connects the pipe and the exit to the running loop. At boot the supervisor launches the first
proxy right after choosing the config, before it imports asyncio and builds the rest of the
box (issue 13, boot to first answer); every other start is `start()`, both halves at once.
Nothing here imports asyncio at module level, for that reason.

On the appliance the first proxy is older still: `run-supervisor` starts it in the background
and then execs the supervisor, so the proxy is already this process's child when Python
starts. `ProxyProcess.inherit()` wraps such a child (its pid and the fifo its output goes to)
so the loop attaches and supervises it like one it launched.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from ..pdeathsig import term_with_parent

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("sipedge.appliance.process")
proxy_log = logging.getLogger("sipedge.proxy")

# "2026-12-07 00:50:01,123 ERROR sipedge.app[123]: cannot start: ..." (app.setup_logging)
_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                   r"(\S+?): (.*)$")
MAX_LINE = 2000


class InheritedChild:
    """The part of `subprocess.Popen` ProxyProcess uses, for a child this process did not fork
    (it inherited it across exec): poll, wait, signal, and its output as `stdout`."""

    def __init__(self, pid: int, stdout: BinaryIO) -> None:
        self.pid = pid
        self.stdout: BinaryIO | None = stdout
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: gone, status unknown
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            rc = self._reap(0)
            assert rc is not None
            return rc
        import time

        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return rc

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class ProxyProcess:
    """One run of the proxy. `wait()` returns the exit status (negative: killed by signal)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | InheritedChild | None = None
        self._reader: asyncio.Task[None] | None = None
        self._exited: asyncio.Future[int] | None = None
        self.last_error: str | None = None  # the proxy's last ERROR line (message only)

    @classmethod
    def inherit(cls, argv: Sequence[str], pid: int, output_fd: int,
                cwd: str | None = None) -> ProxyProcess:
        """The proxy `pid`, a child of this process started before it exec'd (run-supervisor),
        as if launched with `argv` in `cwd`. Its stdout and stderr are a fifo that
        `output_fd` holds open for reading and writing (the shell opened it so, so that
        neither side's open blocks): it is reopened read-only here and `output_fd` closed,
        so the pipe ends once the proxy's last process has closed it. OSError when `pid` is
        not a child of this process or `output_fd` is not open."""
        # ChildProcessError (an OSError) if not our child; WNOWAIT: an exit stays to be read
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        try:
            fd = os.open(f"/proc/self/fd/{output_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.fstat(output_fd)  # not open at all: OSError
            fd = os.dup(output_fd)  # no /proc: keep the read-write end (no end of file)
            log.warning("proxy output fd=%d not reopened read-only", output_fd)
        os.close(output_fd)
        proc = cls(argv, cwd=cwd)
        proc._popen = InheritedChild(pid, os.fdopen(fd, "rb", buffering=0))
        log.info("proxy inherited pid=%d argv=%s", pid, " ".join(proc.argv))
        return proc

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.returncode is None

    @property
    def launched(self) -> bool:
        return self._popen is not None

    async def start(self) -> None:
        self.launch()
        await self.attach()

    def launch(self) -> None:
        """Fork and exec the proxy (no event loop needed); OSError if it cannot be run."""
        self._popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, env=self.env, cwd=self.cwd,
            # in the child before exec: SIGTERM when the supervisor dies (even by SIGKILL),
            # so a restarted supervisor never meets an orphaned proxy holding the SIP ports
            preexec_fn=term_with_parent)
        log.info("proxy started pid=%d argv=%s", self._popen.pid, " ".join(self.argv))

    async def attach(self) -> None:
        """Connect a launched proxy to the running loop: its output lines to the log, its
        exit to `wait()`. Lines written before this wait in the pipe."""
        import asyncio

        assert self._popen is not None and self._popen.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE * 4, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                     self._popen.stdout)
        self._reader = asyncio.ensure_future(self._read_output(reader))
        self._exited = loop.create_future()
        popen, exited = self._popen, self._exited
        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # no pidfd (kernel < 5.3): a thread waits instead
            task = asyncio.ensure_future(asyncio.to_thread(popen.wait))
            task.add_done_callback(lambda t: exited.done() or exited.set_result(t.result()))
            return

        def on_exit() -> None:
            rc = popen.poll()
            if rc is None:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(rc)

        loop.add_reader(pidfd, on_exit)
        on_exit()  # it may have ended before the reader was added

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
        import asyncio

        assert self._exited is not None, "wait() before attach()"
        rc = await asyncio.shield(self._exited)
        if self._reader is not None:  # the pipe's last lines (the reason of an exit)
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            except asyncio.TimeoutError:  # a worker still holds the pipe: do not wait
                pass
        return rc

    def _signal_group(self, sig: int) -> None:
        if not self.running:
            return
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            # not (yet) a group leader: an inherited child may not have run setsid yet
            try:
                self._popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM to the main process only; it stops its workers itself."""
        if self.running:
            assert self._popen is not None
            try:
                self._popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL to the whole process group."""
        self._signal_group(signal.SIGKILL)

    def discard(self) -> None:
        """SIGKILL a launched process group that will never be attached, and reap it."""
        if self._popen is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("proxy pid=%s outlived SIGKILL", self._popen.pid)
        if self._popen.stdout is not None:
            self._popen.stdout.close()

    def reap_group(self) -> None:
        """After the main process exited: kill any worker it left behind."""
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
