"""SPI/port allocation: unique, released, skips SPIs the kernel has, exhaustion -> None."""

from __future__ import annotations

import asyncio
import random

import pytest
from sipedge.modules.ims_pcscf.alloc import Allocator


def test_unique_until_exhausted_then_none():
    a = Allocator(1000, 1999, 6000, 8)
    leases = [a.allocate() for _ in range(8)]
    assert all(leases)
    assert a.allocate() is None  # exhaustion: no exception
    ports = [p for l in leases for p in (l.port_ps, l.port_pc)]
    spis = [s for l in leases for s in (l.spi_ps, l.spi_pc)]
    assert len(set(ports)) == 16 and len(set(spis)) == 16
    assert sorted(ports) == list(range(6000, 6016))
    a.release(leases[3])
    again = a.allocate()
    assert again is not None and again.slot == 3
    assert again.spi_ps not in spis  # round robin: released SPIs are not reused at once


def test_spi_exhaustion():
    a = Allocator(256, 259, 6000, 8)  # 4 SPIs = 2 leases
    assert a.allocate() and a.allocate()
    assert a.allocate() is None


def test_never_an_spi_the_kernel_has():
    a = Allocator(256, 1000, 6000, 100)
    kernel = set(range(256, 400, 2))
    for _ in range(100):
        l = a.allocate(lambda spi: spi in kernel)
        assert l.spi_ps not in kernel and l.spi_pc not in kernel


def test_bad_ranges():
    with pytest.raises(ValueError):
        Allocator(100, 200, 6000, 1)
    with pytest.raises(ValueError):
        Allocator(300, 400, 65530, 4)


def test_concurrent_tasks_interleaved():
    """Many UEs registering and leaving at once (tasks yielding between steps): no lease is
    handed out twice, every release returns capacity, exhaustion only ever gives None."""
    a = Allocator(256, 256 + 63, 7000, 16)
    held: dict[int, object] = {}
    refused = 0
    rnd = random.Random(7)

    async def ue(n: int) -> None:
        nonlocal refused
        for _ in range(40):
            lease = a.allocate()
            if lease is None:
                refused += 1
                await asyncio.sleep(0)
                continue
            assert lease.slot not in held, "slot handed out twice"
            held[lease.slot] = lease
            live = [l for l in held.values()]
            assert len({l.spi_ps for l in live} | {l.spi_pc for l in live}) == 2 * len(live)
            for _ in range(rnd.randint(0, 3)):
                await asyncio.sleep(0)
            del held[lease.slot]
            a.release(lease)

    async def main():
        await asyncio.gather(*(ue(i) for i in range(40)))

    asyncio.run(main())
    assert a.in_use == 0 and refused > 0  # 40 UEs on 16 slots: some were refused
    assert len([a.allocate() for _ in range(16)]) == 16
