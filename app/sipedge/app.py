"""The main process: starts the workers, serves the control socket, watches the routing
script, restarts a worker that dies. The composition root of the proxy."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter

from . import __version__, compiled
from .config import Config, ConfigError, load_file, load_text
from .errors import ScriptError, TransportError
from .io.modules import (
    Ksr,
    ask_workers,
    load_dispatcher_table,
    make_enum_lookup,
    registrar_db_path,
    registrar_ram_path,
)
from .io.rpc import RpcError, RpcServer
from .io.worker import STATS_SLOT_BYTES, Worker, resolve_script_path, run_forked_worker
from .modules.auth import rpc as auth_rpc
from .modules.registrar import rpc as reg_rpc
from .modules.registrar.aio import AsyncStore
from .modules.registrar.store import Store, StoreError
from .script.loader import load_script, script_mtime

log = logging.getLogger("sipedge")

WORKER_STALE_S = 3.0
RESTART_BACKOFF_S = (0.2, 1.0, 5.0)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s", force=True)


class Proxy:
    """Owns the worker processes of one running configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nworkers = config.core.workers
        self.run_id = os.urandom(6).hex()  # not uuid: it imports platform (boot time)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.fd = os.memfd_create("sipedge-stats")
        os.ftruncate(self.fd, STATS_SLOT_BYTES * self.nworkers)
        self.stats_map = mmap.mmap(self.fd, STATS_SLOT_BYTES * self.nworkers)
        self.procs: list[subprocess.Popen | ForkedWorker | LocalWorker | None] = \
            [None] * self.nworkers
        self.restarts: list[int] = [0] * self.nworkers
        self.script_path = resolve_script_path(config)
        self.script_mtime = script_mtime(self.script_path) if self.script_path else -1
        self.script_error: str | None = None
        self.reloads = 0
        self._stopping = False
        self.modules = tuple(config.core.modules)
        self.store: AsyncStore | None = None  # the registrar database (main process side)
        self._secrets: dict[str, str] = {}  # handed to the workers on stdin, never logged
        self.dispatcher_guard = None  # dispatcher.reload rate limit (main process)
        self.enum_lookup = None  # enum.lookup RPC runs here, on its own resolver

    # -- modules (the main process's share: database, secrets, purge, RPC) ----------

    async def start_modules(self) -> None:
        """Open the registrar database (creates the schema) and settle the nonce secret
        before the workers start. Raises StoreError."""
        if "registrar" in self.modules:
            p = self.config.registrar
            path = registrar_db_path(self.config)
            self.store = await AsyncStore.open(path, synchronous=p.db_synchronous,
                                               location_path=registrar_ram_path(p, path))
            log.info("registrar database open path=%s", path)
            await self._registrar_storage_start(p)
        if "auth" in self.modules:
            secret = self.config.auth.secret.encode()
            if not secret:
                assert self.store is not None
                secret = await self.store.run(Store.get_or_create_secret, "auth.nonce")
            self._secrets["auth"] = secret.hex()
        if "dispatcher" in self.modules:
            # parsed here once so that a bad list file stops the start with file:line
            # errors (DispatcherListError / ValueError); each worker reads it again
            table = load_dispatcher_table(self.config)
            from .modules.dispatcher.rpc import ReloadGuard

            self.dispatcher_guard = ReloadGuard(self.config.dispatcher.reload_min_interval_s)
            log.info("dispatcher destinations=%d sets=%d source=%s", len(table),
                     len(table.sets), table.source)

    async def _registrar_storage_start(self, p) -> None:
        """Subscribers declared in the config file into the database; with write-back
        storage, the saved bindings into RAM (once per RAM file: a restarted proxy keeps
        what RAM has). Before the workers start."""
        assert self.store is not None
        if p.storage == "write-back":
            n = await self.store.run(Store.load_location, time.time())
            log.info("registrar storage=write-back bindings loaded into RAM count=%d", n)
        if p.subscriber:
            written, removed = await self.store.run(Store.sync_subscribers, [
                (s.username, s.domain, s.ha1_md5, s.ha1_sha256) for s in p.subscriber])
            log.info("registrar subscribers from the config file synced=%d removed=%d",
                     written, removed)

    async def stop_modules(self) -> None:
        if self.store is not None:
            if self.config.registrar.storage == "write-back":
                n = await self.store.run(Store.flush_location, time.time())
                log.info("registrar storage=write-back bindings saved at stop count=%d", n)
            await self.store.close()
            self.store = None

    async def purge_bindings(self) -> None:
        """Delete expired bindings every [registrar] purge_interval_s; with write-back
        storage, save the RAM bindings every write_back_interval_s."""
        if self.store is None:
            return
        p = self.config.registrar
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + p.purge_interval_s
        next_flush = loop.time() + p.write_back_interval_s if p.storage == "write-back" \
            else float("inf")
        while not self._stopping:
            await asyncio.sleep(max(0.0, min(next_purge, next_flush) - loop.time()))
            now = loop.time()
            try:
                if now >= next_flush:
                    next_flush = now + p.write_back_interval_s
                    n = await self.store.run(Store.flush_location, time.time())
                    log.debug("registrar write-back saved bindings count=%d", n)
                if now >= next_purge:
                    next_purge = now + p.purge_interval_s
                    n = await self.store.purge_expired(time.time())
                    if n:
                        log.info("registrar purged expired bindings count=%d", n)
            except StoreError as exc:
                log.warning("registrar purge or write-back failed: %s", exc)

    def module_rpc(self) -> dict:
        methods: dict = {}
        if self.store is not None:
            store = self.store

            async def ul_dump(p):
                return await store.run(reg_rpc.ul_dump, time.time())

            async def ul_show(p):
                return await store.run(reg_rpc.ul_show, _arg(p, "aor"), time.time())

            async def ul_rm(p):
                return await store.run(reg_rpc.ul_rm, _arg(p, "aor"))

            async def subscriber_add(p):
                kw = {k: p[k] for k in ("password", "ha1_md5", "ha1_sha256", "realm")
                      if k in p}
                return await store.run(_subscriber_add, _arg(p, "username"),
                                       _arg(p, "domain", 1), kw)

            async def subscriber_list(p):
                return await store.run(auth_rpc.subscriber_list, p.get("domain"))

            async def subscriber_rm(p):
                return await store.run(auth_rpc.subscriber_rm, _arg(p, "username"),
                                       _arg(p, "domain", 1))

            methods.update({"ul.dump": ul_dump, "ul.show": ul_show, "ul.rm": ul_rm})
            if "auth" in self.modules:
                methods.update({"subscriber.add": subscriber_add,
                                "subscriber.list": subscriber_list,
                                "subscriber.rm": subscriber_rm})
        if "security" in self.modules:
            methods.update({"sec.blocked": self.sec_blocked, "sec.unblock": self.sec_unblock})
        if "dispatcher" in self.modules:
            methods.update({"dispatcher.list": self.dispatcher_list,
                            "dispatcher.set_state": self.dispatcher_set_state,
                            "dispatcher.reload": self.dispatcher_reload})
        if "enum" in self.modules:
            methods["enum.lookup"] = self.enum_lookup_rpc
        if "http_client" in self.modules:
            methods["http_client.stats"] = self.http_client_stats
        if "uac" in self.modules:
            from .modules.uac.rpc import main_methods

            methods.update(main_methods(self._ask_workers))
        if "diameter" in self.modules:
            from .modules.diameter.runtime import main_rpc

            methods.update(main_rpc(self._ask_workers))
        if "ims_pcscf" in self.modules:  # one worker owns the SA sets (workers = 1)
            # the worker answers once its XFRM thread (queued behind installs) or a
            # self-test thread is done: not within the 1 s other fan-outs get
            for name in ("ipsec.list", "ipsec.crypto"):
                methods[name] = lambda p, n=name: self._ask_first(n, p, 5.0)
            methods["ipsec.selftest"] = lambda p: self._ask_first("ipsec.selftest", p, 20.0)
        return methods

    async def dispatcher_list(self, params: dict) -> dict:
        """The table and states of the lowest-numbered worker that answered (worker 0, the
        one that probes and owns health); counters summed over the workers (each selects on
        its own). `worker_states` shows a destination whose state differs between workers
        (for up to a second after a change)."""
        lists = sorted(await self._ask_workers("dispatcher.list", {}),
                       key=lambda r: r.get("worker", 0))
        if not lists:
            raise ValueError("no worker answered")
        probing = [r.get("worker") for r in lists if r.pop("probing", False)]
        out = lists[0]
        out.pop("worker", None)
        out["probing_workers"] = probing
        summed = ("selected", "relays_failed", "active_calls", "probes_sent", "probes_ok",
                  "probes_failed")
        rows = {(s["set"], d["uri"]): d for s in out["sets"] for d in s["destinations"]}
        for row in rows.values():
            row["worker_states"] = [row["state"]]
        for other in lists[1:]:
            for s in other["sets"]:
                for d in s["destinations"]:
                    row = rows.get((s["set"], d["uri"]))
                    if row is None:
                        continue
                    for k in summed:
                        if isinstance(d.get(k), int) and isinstance(row.get(k), int):
                            row[k] += d[k]
                    row["worker_states"].append(d["state"])
        for row in rows.values():
            if len(set(row["worker_states"])) == 1:
                del row["worker_states"]
        out["workers"] = len(lists)
        return out

    async def dispatcher_set_state(self, params: dict) -> dict:
        p = {"set": _arg(params, "set"), "uri": _arg(params, "uri", 1),
             "state": _arg(params, "state", 2)}
        results = await self._ask_workers("dispatcher.set_state", p)
        if not results:
            raise ValueError("no worker answered")
        return results[0]

    async def dispatcher_reload(self, params: dict) -> dict:
        """Parse the list file here (errors with file:line, the workers keep their table),
        then every worker switches to it."""
        from .modules.dispatcher.core import DispatcherError
        from .modules.dispatcher.table import DispatcherListError

        now = time.monotonic()
        assert self.dispatcher_guard is not None
        try:
            self.dispatcher_guard.check(now)
            table = load_dispatcher_table(self.config)
        except DispatcherListError as exc:
            raise RpcError(-32000, "dispatcher.reload refused: " +
                           "; ".join(str(e) for e in exc.errors)) from None
        except (DispatcherError, ValueError) as exc:  # too soon; a (set, URI) given twice
            raise RpcError(-32000, str(exc)) from None
        self.dispatcher_guard.last = now
        results = await self._ask_workers("dispatcher.reload", {})
        if not results:
            raise ValueError("no worker answered")
        return {**results[0], "workers": len(results), "source": table.source}

    async def enum_lookup_rpc(self, params: dict) -> dict:
        from .modules.enum.rpc import enum_lookup

        if self.enum_lookup is None:
            self.enum_lookup = make_enum_lookup(self.config)
        return await enum_lookup(self.enum_lookup, params)

    async def http_client_stats(self, params: dict) -> dict:
        total: Counter[str] = Counter()
        results = await self._ask_workers("http_client.stats", {})
        for r in results:
            total.update(r)
        return {**{k: total.get(k, 0) for k in ("requests", "connections_opened",
                                                 "idle_connections")},
                "workers": len(results)}

    async def _ask_first(self, method: str, params: dict, timeout: float = 1.0):
        """ims_pcscf runs in one worker (workers = 1): its answer, or its error."""
        replies = await ask_workers(self.run_id, self.nworkers, method, params, timeout)
        for r in replies:
            if "error" in r:
                raise ValueError(r["error"])
        if not replies:
            raise ValueError("no worker answered")
        return replies[0]["result"]

    async def _ask_workers(self, method: str, params: dict) -> list:
        replies = await ask_workers(self.run_id, self.nworkers, method, params)
        for r in replies:
            if "error" in r:
                raise ValueError(r["error"])
        return [r["result"] for r in replies]

    async def sec_blocked(self, params: dict) -> list:
        """The union over the workers (each keeps its own table); the longest block wins."""
        merged: dict[str, dict] = {}
        for blocked in await self._ask_workers("sec.blocked", {}):
            for b in blocked:
                old = merged.get(b["ip"])
                if old is None or b["expires_in_s"] > old["expires_in_s"]:
                    merged[b["ip"]] = b
        return sorted(merged.values(), key=lambda b: b["ip"])

    async def sec_unblock(self, params: dict) -> bool:
        ip = str(_arg(params, "ip"))
        ipaddress.ip_address(ip)  # ValueError: invalid params, before asking the workers
        return any(await self._ask_workers("sec.unblock", {"ip": ip}))

    # -- workers -------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        if local_worker(self.nworkers):
            self.procs[index] = self._local_worker(index)
            log.info("worker=%d started in the main process (workers = 1)", index)
            return
        # Fork from this process, which has imported everything a worker needs: no second
        # interpreter start and import (seconds on a slow board), and the code pages stay
        # shared. Only while this process has a single thread (a fork copies no other
        # thread, and a lock one of them holds would stay locked in the child); otherwise,
        # or with SIPEDGE_WORKER_EXEC=1, a fresh interpreter runs sipedge.io.worker.
        if os.environ.get("SIPEDGE_WORKER_EXEC") != "1" and threading.active_count() == 1:
            self.procs[index] = self._fork_worker(index)
            log.info("worker=%d started pid=%d (forked)", index, self.procs[index].pid)
            return
        cmd = [sys.executable, "-m", "sipedge.io.worker", "--index", str(index),
               "--workers", str(self.nworkers), "--run-id", self.run_id,
               "--stats-fd", str(self.fd), "--source", self.config.source]
        if self.config.instances.get(self.config.instance_name) is self.config and \
                self.config.instance_name != "default":  # one of [instances]
            cmd += ["--instance", self.config.instance_name]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(self.fd,))
        assert proc.stdin is not None
        # the config, then NUL and the secrets (TOML text never contains NUL)
        proc.stdin.write(self.config.text.encode() + b"\0" + json.dumps(self._secrets).encode())
        proc.stdin.close()
        self.procs[index] = proc
        log.info("worker=%d started pid=%d", index, proc.pid)

    def _fork_worker(self, index: int) -> ForkedWorker:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return ForkedWorker(pid)
        code = 70  # EX_SOFTWARE: the worker raised something it does not handle
        try:
            code = run_forked_worker(index, self.nworkers, self.config, self.run_id, self.fd,
                                     dict(self._secrets))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child must never return into this process
            log.exception("worker=%d crashed", index)
        finally:
            os._exit(code)

    def _local_worker(self, index: int) -> LocalWorker:
        worker = Worker(index, self.nworkers, self.config, self.run_id, self.stats_map,
                        dict(self._secrets), own_signals=False)
        task = asyncio.get_running_loop().create_task(_run_local_worker(worker, index),
                                                      name=f"worker-{index}")
        return LocalWorker(worker, task)

    async def stop_local_workers(self, timeout: float = 5.0) -> None:
        """Stop a worker that runs in this process (it needs the event loop to close its
        listeners, which stop_workers(), synchronous, cannot give it)."""
        self._stopping = True
        for p in self.procs:
            if isinstance(p, LocalWorker) and p.poll() is None:
                p.terminate()
                done, _ = await asyncio.wait({p.task}, timeout=timeout)
                if not done:
                    p.kill()
                    await asyncio.wait({p.task}, timeout=timeout)

    def start_workers(self) -> None:
        for i in range(self.nworkers):
            self.spawn(i)

    def read_slot(self, index: int) -> dict | None:
        off = index * STATS_SLOT_BYTES
        for _ in range(3):
            (n,) = struct.unpack_from("!I", self.stats_map, off)
            if n == 0 or n > STATS_SLOT_BYTES - 4:
                return None
            try:
                return json.loads(self.stats_map[off + 4:off + 4 + n])
            except ValueError:
                continue  # torn read while the worker writes; try again
        return None

    def workers_alive(self) -> int:
        now = time.monotonic()
        alive = 0
        for i, p in enumerate(self.procs):
            slot = self.read_slot(i)
            if p is not None and p.poll() is None and slot and slot.get("pid") == p.pid \
                    and now - slot["ts"] < WORKER_STALE_S:
                alive += 1
        return alive

    async def monitor(self) -> None:
        """Restart workers that exit (with backoff)."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for i, p in enumerate(self.procs):
                if p is None or p.poll() is None or self._stopping:
                    continue
                rc = p.returncode
                delay = RESTART_BACKOFF_S[min(self.restarts[i], len(RESTART_BACKOFF_S) - 1)]
                self.restarts[i] += 1
                log.error("worker=%d exited rc=%s; restarting in %.1fs", i, rc, delay)
                self.procs[i] = None
                asyncio.get_running_loop().call_later(delay, self._respawn, i)

    def _respawn(self, i: int) -> None:
        if not self._stopping and self.procs[i] is None:
            self.spawn(i)

    def stop_workers(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- routing script ------------------------------------------------------------

    def reload_script(self) -> dict:
        """Validate the script here, then tell the workers to load it. A script that fails
        is refused with file:line and the workers keep the old one."""
        if not self.script_path:
            raise RpcError(-32000, "no routing script configured")
        self.script_mtime = script_mtime(self.script_path)
        try:
            load_script(self.script_path, {"ksr": Ksr()})
        except ScriptError as exc:
            self.script_error = str(exc)
            log.error("routing script refused, the old one keeps running: %s", exc)
            raise RpcError(-32000, f"script refused: {exc}", {"location": exc.location}) from None
        self.script_error = None
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGUSR1)
        self.reloads += 1
        log.info("routing script reloaded path=%s", self.script_path)
        return {"reloaded": self.script_path, "workers": self.nworkers}

    async def watch_script(self) -> None:
        if not self.script_path:
            return
        while not self._stopping:
            await asyncio.sleep(self.config.routing.reload_check_s)
            m = script_mtime(self.script_path)
            if m != self.script_mtime:
                try:
                    self.reload_script()
                except RpcError:
                    pass  # logged; old script stays

    # -- RPC -----------------------------------------------------------------------

    def rpc_methods(self) -> dict:
        return {
            "core.version": lambda p: {"version": __version__, "python": sys.version.split()[0]},
            "core.uptime": lambda p: {"uptime_s": round(time.monotonic() - self.started, 3),
                                      "started": self.started_wall},
            "core.health": lambda p: self.health(),
            "core.panel": lambda p: self.panel(),
            "stats": lambda p: self.stats(p),
            "tm.stats": lambda p: self.tm_stats(),
            "route.reload": lambda p: self.reload_script(),
            "config.check": lambda p: config_check(p.get("file") or
                                                   (p.get("args") or [self.config.source])[0]),
            **self.module_rpc(),
        }

    def health(self) -> dict:
        lags = [s.get("lag_ms", 0.0) for s in (self.read_slot(i) for i in range(self.nworkers)) if s]
        return {"workers_alive": self.workers_alive(), "workers_expected": self.nworkers,
                "loop_lag_ms": max(lags) if lags else None,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "script_error": self.script_error}

    async def panel(self) -> dict:
        """The numbers of the front panel and `status`: registered contacts (None without a
        registrar), transactions in progress and INVITE transactions in progress (calls being
        set up or torn down)."""
        tm = self.tm_stats()
        regs = None
        if self.store is not None:
            from .modules.registrar import rpc as reg_rpc

            regs = (await self.store.run(reg_rpc.ul_dump, time.time()))["count"]
        active = tm["active"]
        return {"registrations": regs, "transactions": tm["active_total"],
                "calls": active.get("ict", 0) + active.get("ist", 0)}

    def stats(self, params: dict) -> dict:
        total: Counter[str] = Counter()
        per_worker = {}
        for i in range(self.nworkers):
            slot = self.read_slot(i) or {}
            st = slot.get("stats", {})
            total.update(st)
            per_worker[str(i)] = {"pid": slot.get("pid"), "lag_ms": slot.get("lag_ms"),
                                  "connections": slot.get("connections"), **st}
        return {"total": _group(total), "workers": per_worker}


    def tm_stats(self) -> dict:
        """Transactions per kind (ict/nict/ist/nist): active now and created in total, summed
        over the workers, plus the per-worker figures. From the workers' last snapshot
        (every 0.5 s); `age_s` is how old the oldest of them is."""
        active: Counter[str] = Counter()
        total: Counter[str] = Counter()
        contexts = absorbing = 0
        per_worker = {}
        reported = 0
        now = time.monotonic()
        age = 0.0
        for i in range(self.nworkers):
            slot = self.read_slot(i) or {}
            tm = slot.get("tm") or {}
            reported += bool(tm)
            if tm:
                age = max(age, now - slot.get("ts", now))
            active.update(tm.get("active", {}))
            total.update(tm.get("total", {}))
            contexts += tm.get("contexts", 0)
            absorbing += tm.get("absorbing", 0)
            per_worker[str(i)] = tm
        kinds = ("ict", "nict", "ist", "nist")
        return {"active": {k: active.get(k, 0) for k in kinds},
                "total": {k: total.get(k, 0) for k in kinds},
                "active_total": sum(active.values()), "contexts": contexts,
                "absorbing": absorbing, "workers_reporting": reported,
                "age_s": round(age, 3), "workers": per_worker}


def local_worker(nworkers: int) -> bool:
    """`workers = 1` runs its worker in the main process: one Python process, no fork (issue
    13: boot time and memory). SIPEDGE_WORKER_FORK=1 forks it anyway, SIPEDGE_WORKER_EXEC=1
    starts a fresh interpreter."""
    return (nworkers == 1 and os.environ.get("SIPEDGE_WORKER_FORK") != "1"
            and os.environ.get("SIPEDGE_WORKER_EXEC") != "1")


async def _run_local_worker(worker: Worker, index: int) -> int:
    """The worker's life in the main process; returns the exit status a worker process
    would have had (2: cannot start, 3: cannot bind, 70: crashed)."""
    try:
        await worker.run()
        return 0
    except asyncio.CancelledError:
        await _stop_quietly(worker, index)  # killed: close the listeners all the same
        raise
    except (ScriptError, TransportError, StoreError, ConfigError) as exc:
        log.error("worker=%d cannot start: %s", index, exc)
        code = 2
    except OSError as exc:
        log.error("worker=%d cannot bind: %s", index, exc)
        code = 3
    except Exception:  # noqa: BLE001 - a worker process would have died; this one is restarted
        log.exception("worker=%d crashed", index)
        code = 70
    await _stop_quietly(worker, index)
    return code


async def _stop_quietly(worker: Worker, index: int) -> None:
    try:
        await worker.stop()
    except Exception:  # noqa: BLE001 - a half-started worker: close what can be closed
        log.debug("worker=%d stop after failure", index, exc_info=True)


class LocalWorker:
    """The worker of `workers = 1` as a task of the main process's event loop, with the part
    of subprocess.Popen that Proxy uses: SIGTERM stops it, SIGUSR1 reloads its script,
    SIGKILL cancels it."""

    def __init__(self, worker: Worker, task: asyncio.Task) -> None:
        self.pid = os.getpid()  # what the worker writes into its stats slot
        self.worker = worker
        self.task = task
        self.returncode: int | None = None
        self._killed = False

    def poll(self) -> int | None:
        if self.returncode is None and self.task.done():
            self.returncode = -signal.SIGKILL if self.task.cancelled() else self.task.result()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """No blocking here: the task needs this very thread to finish."""
        if self.poll() is None:
            if self._killed:
                return -signal.SIGKILL  # cancelled; it closes its listeners at the next turn
            raise subprocess.TimeoutExpired("worker in the main process", timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        if sig == signal.SIGUSR1:
            self.worker.reload_script()
        elif sig == signal.SIGKILL:
            self._killed = True
            self.task.cancel()
        else:
            self.worker.request_stop()

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkedWorker:
    """A forked worker with the part of subprocess.Popen that Proxy uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _arg(params: dict, key: str, position: int = 0):
    """A named RPC parameter, or the positional one (`sipedgectl ul.show alice@localhost`)."""
    if key in params:
        return params[key]
    args = params.get("args") or []
    if len(args) > position:
        return args[position]
    raise KeyError(key)


def _subscriber_add(store: Store, username: str, domain: str, kw: dict) -> dict:
    # sipedgectl turns password=1234 into a number: credentials are strings
    kw = {k: str(v) for k, v in kw.items()}
    return auth_rpc.subscriber_add(store, str(username), str(domain), **kw)


def _group(flat: Counter[str]) -> dict:
    """Turn rcv_req_INVITE style counters into nested groups for display."""
    out: dict = {"requests_in": {}, "requests_out": {}, "replies_in": {}, "replies_out": {},
                 "replies_sent": {}}
    names = {"rcv_req_": "requests_in", "fwd_req_": "requests_out", "rcv_rpl_": "replies_in",
             "fwd_rpl_": "replies_out", "snd_rpl_": "replies_sent"}
    for key, value in sorted(flat.items()):
        for prefix, group in names.items():
            if key.startswith(prefix):
                out[group][key[len(prefix):]] = value
                break
        else:
            out[key] = value
    for k in ("drops", "parse_errors"):
        out.setdefault(k, 0)
    return out


def config_check(path: str) -> dict:
    """Validate a config file (and its routing script). Used by --check-config and RPC.
    With [instances], every instance is checked; its problems name it."""
    try:
        config = load_file(path)
    except ConfigError as exc:
        return {"valid": False, "errors": [str(e) for e in exc.errors]}
    errors: list[str] = []
    for name, inst in config.instances.items():
        errors += _check_instance(inst, "" if inst is config else f"instances.{name}.")
    return {"valid": not errors, "errors": errors,
            "warnings": [str(w) for w in config.warnings]}


def _check_instance(config: Config, prefix: str) -> list[str]:
    """One instance's files: the dispatcher list and the routing script."""
    if "dispatcher" in config.core.modules:
        from .modules.dispatcher.table import DispatcherListError

        try:
            load_dispatcher_table(config)
        except DispatcherListError as exc:
            return [f"{prefix}{e}" if prefix else str(e) for e in exc.errors]
        except ValueError as exc:
            return [f"{config.source}: {prefix}dispatcher.list_file: {exc}"]
    script = resolve_script_path(config)
    if script:
        try:
            load_script(script, {"ksr": Ksr()})
        except ScriptError as exc:
            return [f"{exc.location}: {prefix}routing.script: {exc.reason}"]
    return []


async def serve(config: Config) -> int:
    proxy = Proxy(config)
    if proxy.script_path:
        try:
            load_script(proxy.script_path, {"ksr": Ksr()})
        except ScriptError as exc:
            log.error("cannot start: routing script: %s", exc)
            return 2
    try:
        await proxy.start_modules()
    except StoreError as exc:
        log.error("cannot start: registrar database: %s", exc)
        return 2
    except (ConfigError, ValueError) as exc:  # the dispatcher list (DispatcherListError)
        errors = getattr(exc, "errors", None) or [exc]
        for e in errors:
            log.error("cannot start: dispatcher: %s", e)
        return 2
    proxy.start_workers()
    rpc = RpcServer(config.core.ctl_socket, proxy.rpc_methods())
    try:
        await rpc.start()
    except OSError as exc:
        log.error("cannot open control socket %s: %s", config.core.ctl_socket, exc)
        await proxy.stop_local_workers()
        proxy.stop_workers()
        await proxy.stop_modules()
        return 3
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _safe_reload(proxy))
    tasks = [loop.create_task(proxy.monitor()), loop.create_task(proxy.watch_script()),
             loop.create_task(proxy.purge_bindings())]
    listen = ", ".join(f"{lp.proto}:{lp.address}:{lp.port}" for lp in config.listen)
    log.info("sipedge %s running config=%s instance=%s workers=%d listen=[%s] ctl=%s",
             __version__, config.source, config.instance_name, proxy.nworkers, listen,
             config.core.ctl_socket)
    log.info("build: %s", compiled.summary())  # the compiled build or pure Python
    await stop.wait()
    log.info("stopping")
    for t in tasks:
        t.cancel()
    await rpc.close()
    await proxy.stop_local_workers()
    proxy.stop_workers()
    await proxy.stop_modules()
    return 0


def _safe_reload(proxy: Proxy) -> None:
    try:
        proxy.reload_script()
    except RpcError:
        pass  # already logged


def run(config: Config) -> int:
    setup_logging(config.core.log_level)
    if local_worker(config.core.workers):
        # the worker's event loop is this one: uvloop, as in a worker process
        from .io.worker import _run_loop

        return _run_loop(serve(config))
    return asyncio.run(serve(config))


def load_config_or_exit(path: str | None) -> Config:
    from .config import load_default

    try:
        config = load_file(path) if path else load_default()
    except ConfigError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)  # noqa: T201 - CLI output before logging exists
        sys.exit(1)
    for w in config.warnings:
        print(f"warning: {w}", file=sys.stderr)  # noqa: T201
    return config


__all__ = ["Proxy", "run", "serve", "config_check", "load_config_or_exit", "setup_logging",
           "load_text"]
