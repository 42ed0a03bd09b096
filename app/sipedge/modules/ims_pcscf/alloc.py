"""SPI and protected-port allocation (sans-IO).

Ports come in slots: slot i is port_ps = port_base + 2*i, port_pc = port_base + 2*i + 1
(listeners for all slots are opened at start). SPIs come from [spi_min, spi_max], handed
out round-robin so a just-released SPI is not reused at once; an SPI the kernel still has
(`kernel_has`) or that is still leased is skipped. Exhaustion returns None (the caller
answers 503), never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Lease:
    slot: int
    port_ps: int
    port_pc: int
    spi_ps: int  # inbound SA at our protected server port
    spi_pc: int  # inbound SA at our protected client port


class Allocator:
    def __init__(self, spi_min: int, spi_max: int, port_base: int, slots: int) -> None:
        if not 256 <= spi_min < spi_max <= 0xFFFFFFFF:
            raise ValueError("SPI range must be within 256..4294967295 and not empty")
        if slots < 1 or port_base < 1 or port_base + 2 * slots - 1 > 65535:
            raise ValueError("protected port range does not fit 1..65535")
        self.spi_min, self.spi_max = spi_min, spi_max
        self.port_base, self.slots = port_base, slots
        self._spis: set[int] = set()
        self._slots: set[int] = set()
        self._spi_cursor = spi_min
        self._slot_cursor = 0

    @property
    def in_use(self) -> int:
        return len(self._slots)

    def ports(self) -> list[int]:
        return list(range(self.port_base, self.port_base + 2 * self.slots))

    def slot_of_port(self, port: int) -> int | None:
        off = port - self.port_base
        return off // 2 if 0 <= off < 2 * self.slots else None

    def _spi(self, kernel_has: Callable[[int], bool], taken: set[int]) -> int | None:
        span = self.spi_max - self.spi_min + 1
        for _ in range(min(span, 65536)):
            spi = self._spi_cursor
            self._spi_cursor = spi + 1 if spi < self.spi_max else self.spi_min
            if spi not in self._spis and spi not in taken and not kernel_has(spi):
                return spi
        return None

    def allocate(self, kernel_has: Callable[[int], bool] = lambda spi: False) -> Lease | None:
        if len(self._slots) >= self.slots:
            return None
        for k in range(self.slots):
            slot = (self._slot_cursor + k) % self.slots
            if slot not in self._slots:
                break
        spi_ps = self._spi(kernel_has, set())
        spi_pc = self._spi(kernel_has, {spi_ps}) if spi_ps is not None else None
        if spi_ps is None or spi_pc is None:
            return None
        self._slot_cursor = (slot + 1) % self.slots
        self._slots.add(slot)
        self._spis |= {spi_ps, spi_pc}
        return Lease(slot, self.port_base + 2 * slot, self.port_base + 2 * slot + 1,
                     spi_ps, spi_pc)

    def release(self, lease: Lease) -> None:
        self._slots.discard(lease.slot)
        self._spis.discard(lease.spi_ps)
        self._spis.discard(lease.spi_pc)
