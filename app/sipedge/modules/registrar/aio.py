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

The thread is a plain one fed by a SimpleQueue, its result handed back with one
`call_soon_threadsafe`: `run_in_executor` on a ThreadPoolExecutor costs a concurrent Future
(a Condition and its locks), a work item, the pool's idle check and two chained futures per
call, about 7% of a registration's instructions under callgrind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import store as _reads
from .core import Binding, RegisterOutcome
from .store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")


class DbThread:
    """One thread that runs calls in order; each call's result comes back to the loop
    that submitted it as an asyncio Future. A daemon thread: `AsyncStore.close()` lets the
    queued calls finish; a process that exits without it may cut a transaction short,
    which SQLite rolls back (the REGISTER it served was not answered yet)."""

    def __init__(self, name: str = "registrar-db") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def _main(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            loop, fut, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                _hand_back(loop, _set_exception, fut, exc)
            else:
                _hand_back(loop, _set_result, fut, result)
            del item, loop, fut, fn, args

    def stop(self) -> None:
        """Let the thread finish the calls queued so far and end (does not wait)."""
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def _hand_back(loop: asyncio.AbstractEventLoop, setter: Callable, fut: asyncio.Future,
               value: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, fut, value)
    except RuntimeError:  # the loop is closed: nobody waits for the result any more
        pass


def _set_result(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():  # cancelled meanwhile
        fut.set_result(result)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class AsyncStore:
    def __init__(self, thread: DbThread, store: Store,
                 reader: sqlite3.Connection | None = None) -> None:
        self._thread = thread
        self._store = store
        self._reader = reader  # read-only, used on the loop (None: everything in the thread)

    @classmethod
    async def open(cls, path: str | Path, **store_kw: Any) -> "AsyncStore":
        thread = DbThread()
        try:
            store = await thread.submit(functools.partial(Store, path, **store_kw))
        except BaseException:
            thread.stop()
            raise
        return cls(thread, store, _open_reader(store.path))

    def run(self, fn: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        """Run `fn(store, *args)` in the database thread (await the result)."""
        return self._thread.submit(fn, self._store, *args)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        try:
            await self.run(Store.close)
        finally:
            self._thread.stop()
        self._thread.join()

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
