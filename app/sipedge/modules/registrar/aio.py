"""asyncio access to the `Store`: every call runs in one dedicated thread.

SQLite calls block (fsync on commit, waiting for another process's write lock), so the event
loop never makes them itself. One thread owns the connection; calls queue up in order, which
also serialises this worker's writes without extra locking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from pathlib import Path
from typing import Any, Callable, TypeVar

from .core import Binding, RegisterOutcome
from .store import Store

T = TypeVar("T")


class AsyncStore:
    def __init__(self, executor: concurrent.futures.ThreadPoolExecutor, store: Store) -> None:
        self._executor = executor
        self._store = store

    @classmethod
    async def open(cls, path: str | Path, **store_kw: Any) -> "AsyncStore":
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                         thread_name_prefix="registrar-db")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor,
                                               functools.partial(Store, path, **store_kw))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, store)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._store, *args)

    async def close(self) -> None:
        await self.run(Store.close)
        self._executor.shutdown(wait=True)

    # -- the calls the registrar, auth and RPC make --------------------------------

    async def update_aor(self, aor: str, compute: Callable[[list[Binding]], RegisterOutcome],
                         max_aors: int | None = None) -> RegisterOutcome:
        return await self.run(Store.update_aor, aor, compute, max_aors)

    async def live_bindings(self, aor: str, now: float) -> list[Binding]:
        return await self.run(Store.live_bindings, aor, now)

    async def all_bindings(self, now: float | None = None) -> list[Binding]:
        return await self.run(Store.all_bindings, now)

    async def nat_bindings(self, now: float) -> list[Binding]:
        return await self.run(Store.nat_bindings, now)

    async def delete_aor(self, aor: str) -> int:
        return await self.run(Store.delete_aor, aor)

    async def purge_expired(self, now: float) -> int:
        return await self.run(Store.purge_expired, now)

    async def get_ha1(self, username: str, domain: str, algorithm: str) -> str | None:
        return await self.run(Store.get_ha1, username, domain, algorithm)

    async def subscriber_exists(self, username: str, domain: str) -> bool:
        return await self.run(Store.subscriber_exists, username, domain)
