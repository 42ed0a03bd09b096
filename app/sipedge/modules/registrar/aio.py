"""asyncio access to the `Store`: every call runs in one dedicated thread, except the two
subscriber reads of a digest check.

SQLite calls block (fsync on commit, waiting for another process's write lock), so the event
loop never makes them itself. One thread owns the connection; calls queue up in order, which
also serialises this worker's writes without extra locking.

The subscriber reads (`get_ha1`, `subscriber_exists`, two per authenticated request) run on
the loop, as Kamailio's auth_db queries run in its worker: in WAL mode a reader never waits
for a writer, and the rows are a few hundred bytes in the page cache. They use a read-only
connection of their own; a read that finds the database busy all the same (a WAL recovery)
goes to the thread like every other call. A hop to the thread and back costs more than the
query (two thread wake-ups and the loop's self-pipe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import store as _reads
from .core import Binding, RegisterOutcome
from .store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncStore:
    def __init__(self, executor: concurrent.futures.ThreadPoolExecutor, store: Store,
                 reader: sqlite3.Connection | None = None) -> None:
        self._executor = executor
        self._store = store
        self._reader = reader  # read-only, used on the loop (None: everything in the thread)

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
        return cls(executor, store, _open_reader(store.path))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` in the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._store, *args)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
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
        if self._reader is not None:
            try:
                return _reads.get_ha1(self._reader, username, domain, algorithm)
            except sqlite3.OperationalError as exc:  # busy: the thread waits for it
                log.debug("registrar db read on the loop: %s; in the thread instead", exc)
        return await self.run(Store.get_ha1, username, domain, algorithm)

    async def subscriber_exists(self, username: str, domain: str) -> bool:
        if self._reader is not None:
            try:
                return _reads.subscriber_exists(self._reader, username, domain)
            except sqlite3.OperationalError as exc:
                log.debug("registrar db read on the loop: %s; in the thread instead", exc)
        return await self.run(Store.subscriber_exists, username, domain)


def _open_reader(path: str) -> sqlite3.Connection | None:
    """A read-only connection for the loop's subscriber reads; None for an in-memory database
    (a second connection would see another one)."""
    if path == ":memory:":
        return None
    try:
        db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=0,
                             isolation_level=None)
        db.execute("PRAGMA query_only=ON")
        return db
    except sqlite3.Error as exc:
        log.warning("registrar db %s: no read-only connection (%s); every read in the thread",
                    path, exc)
        return None
