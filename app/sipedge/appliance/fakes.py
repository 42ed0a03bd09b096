"""Recording fakes of the ports. They back the tests and `sipedge-supervisor --simulate`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .ports import HealthReport


class FakeClock:
    """Monotonic clock under test control: `clock()` / `clock.monotonic()`; `advance(dt)`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, dt: float) -> float:
        self.now += dt
        return self.now


class FakeWatchdog:
    """Records opens, pets and closes (`events` is a list of strings)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.is_open = False

    @property
    def pets(self) -> int:
        return self.events.count("pet")

    def open(self) -> None:
        self.is_open = True
        self.events.append("open")

    def pet(self) -> None:
        assert self.is_open, "pet while closed"
        self.events.append("pet")

    def close(self, *, disarm: bool) -> None:
        self.is_open = False
        self.events.append("close-disarm" if disarm else "close-armed")


class FakeLeds:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []
        self.current: dict[str, tuple[str, int, int]] = {}

    def set(self, role: str, mode: str, on_ms: int = 0, off_ms: int = 0) -> None:
        self.calls.append((role, mode, on_ms, off_ms))
        self.current[role] = (mode, on_ms, off_ms)


class FakeDisplay:
    def __init__(self, cols: int = 16, rows: int = 2) -> None:
        self._size = (cols, rows)
        self.screens: list[list[str]] = []

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def show(self, lines: Sequence[str]) -> None:
        self.screens.append(list(lines))

    @property
    def text(self) -> str:
        return "\n".join(self.screens[-1]) if self.screens else ""


class FakeSmBus:
    """Records every `write_byte` as (address, value)."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []
        self.closed = False

    def write_byte(self, i2c_addr: int, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(value)
        self.writes.append((i2c_addr, value))

    def data(self, address: int | None = None) -> bytes:
        return bytes(v for a, v in self.writes if address is None or a == address)

    def close(self) -> None:
        self.closed = True


class FakeProbe:
    """Answers with `report` (change it from the test); counts probes."""

    def __init__(self, report: HealthReport | None = None) -> None:
        self.report = report or HealthReport(True, "", 2, 2, 1.0)
        self.count = 0

    async def probe(self) -> HealthReport:
        self.count += 1
        return self.report


class FakeUpdateAgent:
    def __init__(self) -> None:
        self.marked_good = 0

    def mark_good(self) -> None:
        self.marked_good += 1

    def status(self) -> dict[str, Any]:
        return {"booted": "A", "marked_good": self.marked_good}


class FakeProcess:
    """A proxy process that exits when the test says so (or on TERM if `dies_on_term`)."""

    instances: list[FakeProcess] = []

    def __init__(self, argv: Sequence[str], *, dies_on_term: bool = True,
                 fail_start: bool = False, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.signals: list[str] = []
        self.last_error: str | None = None  # the proxy's last ERROR line (ProxyProcess)
        self.dies_on_term = dies_on_term
        self.fail_start = fail_start
        self._done: asyncio.Future[int] | None = None
        self.pid = 4242 + len(FakeProcess.instances)
        FakeProcess.instances.append(self)

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    async def start(self) -> None:
        if self.fail_start:
            raise FileNotFoundError(2, "No such file or directory", self.argv[0])
        self._done = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        assert self._done is not None
        return await self._done

    def exit(self, rc: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(rc)

    def terminate(self) -> None:
        self.signals.append("TERM")
        if self.dies_on_term:
            self.exit(-15)

    def kill(self) -> None:
        self.signals.append("KILL")
        self.exit(-9)

    def reap_group(self) -> None:
        self.signals.append("reap")


class FakeNetwork:
    """Stands in for `network.NetworkManager`: records applied params, returns `problems`."""

    def __init__(self, problems: list[str] | None = None,
                 addresses: list[str] | None = None) -> None:
        self.applied: list[Any] = []
        self.problems = problems or []
        self.addresses = addresses or ["eth0 192.0.2.10/24"]
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    async def apply(self, params: Any) -> list[str]:
        self.applied.append(params)
        return list(self.problems)

    def address_lines(self) -> list[str]:
        return list(self.addresses)

    async def watch(self, on_event: Any) -> None:
        while True:
            on_event(await self.events.get())
