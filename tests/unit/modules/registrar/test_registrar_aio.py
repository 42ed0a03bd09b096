"""The asyncio store wrapper, the registrar module instance, its script API and RPC."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from sipedge.config.loader import load_text
from sipedge.errors import ConfigError
from sipedge.modules.registrar import api
from sipedge.modules.registrar.aio import AsyncStore
from sipedge.modules.registrar.module import Registrar
from sipedge.modules.registrar.params import RegistrarParams
from sipedge.modules.registrar.rpc import ul_dump, ul_rm, ul_show
from sipedge.modules.registrar.store import Store
from sipmsg import FakeMsg, request

NOW = 1_700_000_000.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_event_loop_keeps_running_while_the_database_is_locked(tmp_path):
    db = tmp_path / "l.sqlite"
    Store(db).close()

    async def main():
        store = await AsyncStore.open(db, busy_timeout_s=5)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        write = asyncio.create_task(store.purge_expired(NOW))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        assert not write.done()  # waiting for the lock, in the database thread
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await write == 0
        t.cancel()
        await store.close()
        return ticks, time.monotonic() - started

    ticks, elapsed = run(main())
    assert ticks >= 15, f"the loop stalled: {ticks} ticks in {elapsed:.2f}s"


def test_subscriber_reads_on_the_loop_see_every_commit_even_under_a_write_lock(tmp_path):
    """The digest check's reads use the loop's read-only connection: a subscriber added by
    another connection is seen at once, and a write lock held elsewhere does not hold them
    up (WAL: readers never wait for writers)."""
    db = tmp_path / "s.sqlite"
    Store(db).close()

    async def main():
        store = await AsyncStore.open(db)
        assert store._reader is not None
        assert not await store.subscriber_exists("alice", "example.org")
        other = Store(db)
        other.add_subscriber("alice", "example.org", ha1_md5="ab" * 16)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("DELETE FROM subscriber")  # not committed: never seen
        started = time.monotonic()
        assert await store.subscriber_exists("alice", "EXAMPLE.org")
        assert await store.get_ha1("alice", "example.org", "MD5") == "ab" * 16
        assert await store.get_ha1("alice", "example.org", "SHA-256") is None
        waited = time.monotonic() - started
        blocker.execute("ROLLBACK")
        blocker.close()
        other.close()
        await store.close()
        return waited

    assert run(main()) < 1.0


def test_an_in_memory_store_reads_in_its_thread():
    async def main():
        store = await AsyncStore.open(":memory:")
        assert store._reader is None  # a second connection would open another database
        await store.run(lambda st: st.add_subscriber("bob", "example.org", ha1_md5="cd" * 16))
        assert await store.get_ha1("bob", "example.org", "MD5") == "cd" * 16
        await store.close()

    run(main())


@pytest.fixture
def registrar(tmp_path):
    async def make(**kw):
        store = await AsyncStore.open(tmp_path / "l.sqlite")
        await store.run(lambda s: s.add_subscriber("alice", "example.com", ha1_md5="0" * 32))
        await store.run(lambda s: s.add_subscriber("bob", "example.com", ha1_md5="1" * 32))
        return Registrar(RegistrarParams(**kw), store, ("example.com",))
    return make


def _register(user="alice", contacts=("<sip:alice@10.0.0.7:5062>",), **kw):
    return request(to=f"<sip:{user}@example.com>", contacts=list(contacts),
                   via="SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK2;rport", **kw)


def test_save_lookup_registered(registrar):
    async def main():
        reg = await registrar()
        r = await api.save(reg, FakeMsg(_register(), src_ip="203.0.113.9", src_port=31000),
                           NOW, auth_user="alice")
        assert r.status == 200
        assert await api.registered(reg, "alice@example.com", NOW + 1)
        assert await api.registered(reg, "sip:alice@example.com", NOW + 1)
        assert not await api.registered(reg, "bob@example.com", NOW + 1)
        msg = FakeMsg(request("INVITE", "sip:alice@example.com", to="<sip:alice@example.com>",
                              from_="<sip:bob@example.com>"))
        targets, reply = await api.lookup(reg, msg, NOW + 1)
        assert reply is None and len(targets) == 1
        # NAT detected (private Contact, source differs): sent to the received address
        assert targets[0].dst_uri == "sip:203.0.113.9:31000"
        api.apply_targets(msg, targets)
        assert msg.raw.uri_text == "sip:alice@10.0.0.7:5062"
        assert msg.dst_uri == "sip:203.0.113.9:31000"
        assert msg.send_socket == "udp:127.0.0.1:5060"  # the socket it registered through
        # 480 for a known user without bindings, 404 for an unknown one
        bob = FakeMsg(request("INVITE", "sip:bob@example.com", to="<sip:bob@example.com>"))
        assert (await api.lookup(reg, bob, NOW))[1].status == 480
        carol = FakeMsg(request("INVITE", "sip:carol@example.com"))
        assert (await api.lookup(reg, carol, NOW))[1].status == 404
        # expired: 480
        again = FakeMsg(request("INVITE", "sip:alice@example.com"))
        assert (await api.lookup(reg, again, NOW + 7201))[1].status == 480
        await reg.store.close()

    run(main())


def test_save_refusals(registrar):
    async def main():
        reg = await registrar()
        assert (await api.save(reg, FakeMsg(_register("carol")), NOW)).status == 404
        assert (await api.save(reg, FakeMsg(_register()), NOW, auth_user="bob")).status == 403
        other = request(to="<sip:alice@other.org>", contacts=["<sip:a@192.0.2.1>"])
        assert (await api.save(reg, FakeMsg(other), NOW)).status == 403
        await reg.store.close()

    run(main())


def test_save_reads_no_subscriber_the_digest_check_found(registrar):
    """`msg.auth_subscriber` (set by ksr.auth.check when the HA1 of that row matched) spares
    the subscriber read only when it names the To user and domain."""
    async def main():
        reg = await registrar()
        reads = []
        exists = reg.store.subscriber_exists

        async def counted(user, domain):
            reads.append((user, domain))
            return await exists(user, domain)
        reg.store.subscriber_exists = counted
        msg = FakeMsg(_register())
        msg.auth_subscriber = ("alice", "example.com")
        assert (await api.save(reg, msg, NOW, auth_user="alice")).status == 200
        assert reads == []
        carol = FakeMsg(_register("carol"))
        carol.auth_subscriber = ("alice", "example.com")  # another user's: read, refused
        assert (await api.save(reg, carol, NOW)).status == 404
        assert reads == [("carol", "example.com")]
        assert (await api.save(reg, FakeMsg(_register("bob")), NOW)).status == 200
        assert reads[-1] == ("bob", "example.com")
        await reg.store.close()

    run(main())


def test_parallel_fork_branches(registrar):
    async def main():
        reg = await registrar()
        await api.save(reg, FakeMsg(_register(contacts=(
            "<sip:alice@192.0.2.10:5060>;q=0.9", "<sip:alice@192.0.2.11:5060>;q=0.2"),
            extra=["Path: <sip:edge.example.net;lr>", "Supported: path"]),
            src_ip="192.0.2.10"), NOW)
        msg = FakeMsg(request("INVITE", "sip:alice@example.com", to="<sip:alice@example.com>"))
        targets, _ = await api.lookup(reg, msg, NOW)
        api.apply_targets(msg, targets)
        assert msg.raw.uri_text == "sip:alice@192.0.2.10:5060"
        assert msg.tm.main_path == ("<sip:edge.example.net;lr>",)  # the main branch only
        assert msg.raw.get_all("route") == []
        assert msg.branches == [("sip:alice@192.0.2.11:5060",
                                 {"dst_uri": None, "path": ("<sip:edge.example.net;lr>",),
                                  "socket": "udp:127.0.0.1:5060"})]
        await reg.store.close()

    run(main())


def test_rpc_and_purge(tmp_path):
    async def main():
        store = await AsyncStore.open(tmp_path / "l.sqlite")
        await store.run(lambda s: s.add_subscriber("alice", "example.com", ha1_md5="0" * 32))
        reg = Registrar(RegistrarParams(), store, ())
        await api.save(reg, FakeMsg(_register(contacts=("<sip:alice@10.0.0.7>;expires=100",))),
                       NOW)
        dump = await store.run(ul_dump, NOW + 10)
        show = await store.run(ul_show, "alice@example.com", NOW + 10)
        purged = await reg.purge(NOW + 101)
        await api.save(reg, FakeMsg(_register()), NOW)
        removed = await store.run(ul_rm, "alice@example.com")
        left = await store.run(ul_dump, NOW)
        await store.close()
        return dump, show, purged, removed, left

    dump, show, purged, removed, left = run(main())
    assert dump["count"] == 1 and dump["aors"]["alice@example.com"] == show
    assert show[0]["contact"] == "sip:alice@10.0.0.7" and show[0]["expires_in_s"] == 90
    assert show[0]["received"] == "sip:192.0.2.10:5060" and show[0]["nat"] is True
    assert purged == 1 and removed == 1 and left == {"aors": {}, "count": 0}


def test_params_load_from_toml():
    cfg = load_text('[registrar]\ndb_path = "/tmp/x.sqlite"\nmin_expires_s = 30\n'
                    'path_mode = "lazy"\n')
    assert cfg.registrar == RegistrarParams(db_path="/tmp/x.sqlite", min_expires_s=30,
                                            path_mode="lazy")
    with pytest.raises(ConfigError) as e:
        load_text('[registrar]\npath_mode = "sometimes"\nmax_contacts = 0\n')
    assert "registrar.path_mode" in str(e.value) and "registrar.max_contacts" in str(e.value)
