"""The worker side of the feature modules (io/modules.py) on a real event loop and a real
SQLite file: lifecycle, the `ksr` namespace, lookup forking by q, and the per-worker
control socket the main process fans sec.blocked / sec.unblock out over."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import pytest

from sipedge.config import load_text
from sipedge.io.modules import (Ksr, ModuleEnv, WorkerModules, ask_workers, control_address,
                                handle_control, load_order)
from sipedge.modules.auth.rpc import subscriber_add
from sipedge.modules.registrar.store import Store
from sipedge.script.api import RequestMsg
from sipedge.sip.message import parse_message
from sipedge.sip.proxy import LocalAddress, ProxyCore, Source

CORE = ProxyCore([LocalAddress(0, "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)],
                 domains=("localhost",))


def _config(tmp_path, modules='["security", "registrar", "auth"]', extra=""):
    return load_text(f'[core]\nmodules = {modules}\n[proxy]\ndomains = ["localhost"]\n'
                     f'[registrar]\ndb_path = "{tmp_path}/loc.sqlite"\n'
                     f'nat_keepalive_interval_s = 0\n{extra}', str(tmp_path / "c.toml"))


def _req(first: str, extra: str = "") -> RequestMsg:
    raw = parse_message((f"{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
                         "From: <sip:alice@localhost>;tag=1\r\nTo: <sip:bob@localhost>\r\n"
                         f"Call-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
                         ).encode())
    return RequestMsg(raw, Source("udp", "127.0.0.1", 5999, 0), CORE, "udp:127.0.0.1:5060")


def test_load_order_and_ksr_namespace():
    assert load_order(["auth", "security"]) == ["registrar", "auth", "security"]
    k = Ksr({"security": "S"})
    assert k.security == "S" and k.modules == ["security"]
    with pytest.raises(AttributeError, match=r"\[core\] modules"):
        k.registrar  # noqa: B018
    with pytest.raises(AttributeError):
        k.security = 1


def test_handle_control_answers_with_the_request_id():
    methods = {"echo": lambda p: p, "boom": lambda p: int("x")}
    assert json.loads(handle_control(methods, b'{"id": "7", "method": "echo", '
                                              b'"params": {"a": 1}}')) == {"id": "7",
                                                                            "result": {"a": 1}}
    err = json.loads(handle_control(methods, b'{"id": "8", "method": "boom"}'))
    assert err["id"] == "8" and "ValueError" in err["error"]
    assert "no such method" in json.loads(handle_control(methods, b'{"id": 1, "method": "x"}'))[
        "error"]
    assert json.loads(handle_control(methods, b"garbage"))["id"] is None


def test_modules_start_lookup_forks_by_q_and_stop(tmp_path):
    config = _config(tmp_path)
    store = Store(tmp_path / "loc.sqlite")
    subscriber_add(store, "bob", "localhost", "pw")
    subscriber_add(store, "carol", "localhost", "pw")
    store.close()

    async def main():
        mods = WorkerModules(ModuleEnv(config, 0, {"auth": "ab" * 16}))
        await mods.start()
        try:
            ksr = mods.ksr
            assert ksr.modules == ["auth", "registrar", "security"]
            # bob registers two contacts (the registrar's own REGISTER path)
            reg = _req("REGISTER sip:localhost SIP/2.0",
                       "Contact: <sip:bob@10.0.0.2:5062>;q=0.5\r\n"
                       "Contact: <sip:bob@10.0.0.3:5064>;q=0.9\r\nExpires: 600\r\n")
            reg.raw.headers[:] = [h if h[0] != "cseq" else [h[0], h[1], "1 REGISTER"]
                                  for h in reg.raw.headers]
            spec = await ksr.registrar.save(reg)
            assert spec.status == 200, spec
            assert await ksr.registrar.registered("bob@localhost")
            assert await ksr.registrar.registered("sip:bob@localhost")
            inv = _req("INVITE sip:bob@localhost SIP/2.0")
            assert await ksr.registrar.lookup(inv) is None
            assert inv.ruri == "sip:bob@10.0.0.3:5064"  # highest q first
            assert [str(u) for u in inv.tm.branches] == ["sip:bob@10.0.0.2:5062"]
            assert (await ksr.registrar.lookup(_req("INVITE sip:carol@localhost SIP/2.0"))
                    ).status == 480
            assert (await ksr.registrar.lookup(_req("INVITE sip:nobody@localhost SIP/2.0"))
                    ).status == 404
            # auth: no credentials -> 407 challenge with one header per algorithm
            out = await ksr.auth.check(inv)
            assert not out.ok and out.reply.status == 407
            assert [h[0] for h in out.reply.headers] == ["Proxy-Authenticate"]
            assert ksr.auth.needs_auth(inv)
            # security: the worker's screen and the per-worker RPC
            assert mods.security.screen("192.0.2.1", "udp:127.0.0.1:5060", "friendly-scanner"
                                        ).reason == "user_agent"
            rpc = mods.worker_rpc()
            assert rpc["sec.blocked"]({}) == []
            assert rpc["sec.unblock"]({"ip": "192.0.2.1"}) is False
        finally:
            await mods.stop()

    asyncio.run(main())


def test_auth_without_secret_refuses_to_start(tmp_path):
    async def main():
        mods = WorkerModules(ModuleEnv(_config(tmp_path), 0, {}))
        with pytest.raises(RuntimeError, match="secret"):
            await mods.start()
        await mods.stop()

    asyncio.run(main())


def test_ask_workers_over_the_control_socket():
    run_id = uuid.uuid4().hex[:12]
    methods = {"sec.blocked": lambda p: [{"ip": "192.0.2.9", "reason": "flood",
                                          "expires_in_s": 5.0}]}

    async def main():
        loop = asyncio.get_running_loop()
        socks = []
        for i in range(2):  # two fake workers
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.bind(control_address(run_id, i))
            s.setblocking(False)

            def on_readable(s=s):
                payload, addr = s.recvfrom(65536)
                s.sendto(handle_control(methods, payload), addr)

            loop.add_reader(s.fileno(), on_readable)
            socks.append(s)
        try:
            t0 = time.monotonic()
            replies = await ask_workers(run_id, 3, "sec.blocked", {}, timeout=0.5)
            assert [r["result"][0]["ip"] for r in replies] == ["192.0.2.9"] * 2
            assert time.monotonic() - t0 < 0.3  # worker 2 does not exist: no wait for it
        finally:
            for s in socks:
                loop.remove_reader(s.fileno())
                s.close()

    asyncio.run(main())


def test_nat_keepalive_pings_natted_contacts_from_worker_0(tmp_path):
    config = _config(tmp_path, '["registrar"]', "")
    config = load_text(config.text.replace("nat_keepalive_interval_s = 0",
                                           "nat_keepalive_interval_s = 1\n"
                                           "require_subscriber = false"),
                       str(tmp_path / "c.toml"))
    sent: list[tuple] = []

    async def main():
        env = ModuleEnv(config, 0, {}, send=lambda *a: sent.append(a),
                        sent_by=lambda proto: "127.0.0.1:5060")
        mods = WorkerModules(env)
        await mods.start()
        try:
            # the REGISTER came from 127.0.0.1:5999, its Contact says 10.0.0.2:5062: NAT
            reg = _req("REGISTER sip:localhost SIP/2.0",
                       "Contact: <sip:bob@10.0.0.2:5062>\r\nExpires: 600\r\n")
            reg.raw.headers[:] = [h if h[0] != "cseq" else [h[0], h[1], "1 REGISTER"]
                                  for h in reg.raw.headers]
            assert (await mods.ksr.registrar.save(reg)).status == 200
            rt = mods.runtimes["registrar"]
            for _ in range(3):  # the schedule spreads first pings over one interval
                await rt._ping()
                if sent:
                    break
                await asyncio.sleep(0.5)
        finally:
            await mods.stop()

    asyncio.run(main())
    assert sent, "no keepalive sent"
    proto, data, ip, port = sent[0]
    assert (proto, ip, port) == ("udp", "127.0.0.1", 5999)
    assert data.startswith(b"OPTIONS sip:bob@10.0.0.2:5062 SIP/2.0\r\n")
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK0xka" in data


def test_registrar_db_path_resolution(tmp_path):
    from sipedge.config import load_default
    from sipedge.io.modules import registrar_db_path

    default = load_default()
    assert registrar_db_path(default, {}) == "sipedge-data/location.sqlite"
    assert registrar_db_path(default, {"SIPEDGE_DATA_DIR": "/data"}) == \
        "/data/sipedge-data/location.sqlite"
    cfg = load_text('[registrar]\ndb_path = "db/x.sqlite"\n', str(tmp_path / "c.toml"))
    assert registrar_db_path(cfg, {}) == str(tmp_path / "db" / "x.sqlite")
    assert registrar_db_path(load_text(""), {}) == "/data/sipedge/location.sqlite"


def test_dispatcher_enum_http_client_runtimes_start_and_stop(tmp_path):
    from sipedge.io.modules import dispatcher_list_path

    (tmp_path / "ds.list").write_text("1 sip:127.0.0.1:5071 0\n")
    config = load_text('[core]\nmodules = ["dispatcher", "enum", "http_client"]\n'
                       '[dispatcher]\nlist_file = "ds.list"\n'
                       '[[dispatcher.destination]]\nset = 2\nuri = "sip:127.0.0.1:5072"\n',
                       str(tmp_path / "c.toml"))
    assert dispatcher_list_path(config) == str(tmp_path / "ds.list")

    async def main():
        mods = WorkerModules(ModuleEnv(config, 0))
        await mods.start()
        try:
            assert mods.ksr.modules == ["dispatcher", "enum", "http_client"]
            msg = _req("INVITE sip:bob@localhost SIP/2.0")
            sel = mods.ksr.dispatcher.select(msg, 1, "round_robin")
            assert str(msg.dst_uri) == "sip:127.0.0.1:5071"
            assert msg.vars["dispatcher.selection"] is sel
            assert len(mods.relay_failed_hooks) == 1
            mods.relay_failed_hooks[0](msg.vars, 503)
            rows = mods.worker_rpc()["dispatcher.list"]({})["sets"]
            assert [d["relays_failed"] for s in rows for d in s["destinations"]] == [1, 0]
            assert mods.worker_rpc()["http_client.stats"]({})["requests"] == 0
            bad = await mods.ksr.enum.lookup("not a number")
            assert not bad and bad.reason == "not a number"
        finally:
            await mods.stop()

    asyncio.run(main())


def test_config_check_reads_the_dispatcher_list(tmp_path):
    from sipedge.app import config_check

    (tmp_path / "c.toml").write_text('[core]\nmodules = ["dispatcher"]\n'
                                     '[dispatcher]\nlist_file = "ds.list"\n')
    (tmp_path / "ds.list").write_text("1 sip:127.0.0.1:5071\n1 sips:\n")
    out = config_check(str(tmp_path / "c.toml"))
    assert not out["valid"] and out["errors"][0].startswith(f"{tmp_path / 'ds.list'}:2: uri:")
    (tmp_path / "ds.list").write_text("1 sip:127.0.0.1:5071\n")
    assert config_check(str(tmp_path / "c.toml")) == {"valid": True, "errors": [], "warnings": []}


def test_dispatcher_worker0_probes_and_the_others_mirror_it(tmp_path):
    from sipedge.io.modules import notification

    config = load_text('[core]\nmodules = ["dispatcher"]\n[dispatcher]\ninactive_after = 2\n'
                       'probe_mode = "flagged"\n'
                       '[[dispatcher.destination]]\nset = 1\nuri = "sip:127.0.0.1:5071"\n'
                       '[[dispatcher.destination]]\nset = 1\nuri = "sip:127.0.0.1:5072"\n',
                       str(tmp_path / "c.toml"))
    workers: list[WorkerModules] = []

    def notify(index, method, params):  # the control socket, without the socket
        handle_control(workers[index].worker_rpc(), notification(method, params))

    async def main():
        for i in range(2):
            workers.append(WorkerModules(ModuleEnv(config, i, nworkers=2, notify=notify)))
        for w in workers:
            await w.start()
        try:
            w0, w1 = (w.runtimes["dispatcher"] for w in workers)
            assert w0.probing and not w1.probing
            msg = _req("INVITE sip:bob@localhost SIP/2.0")
            workers[1].ksr.dispatcher.select(msg, 1, "priority")
            dest = workers[1].ksr.dispatcher.current(msg)
            for _ in range(2):  # worker 1's failed relays count at worker 0 ...
                workers[1].relay_failed_hooks[0](msg.vars, 503)
            assert w0.disp.health_of(w0.disp.destination(1, str(dest.uri))).relays_failed == 2
            # ... whose state change reaches worker 1 at once
            assert w1.disp.health_of(dest).state.value == "inactive"
            sel = workers[1].ksr.dispatcher.select(_req("INVITE sip:x@localhost SIP/2.0"), 1,
                                                   "priority")
            assert sel.current.uri != dest.uri
            # a full sync brings a worker that missed something back in line
            w1.disp.mirror_state(1, str(dest.uri), "active", 0.0)
            await w0._push_all()
            assert w1.disp.health_of(dest).state.value == "inactive"
        finally:
            for w in workers:
                await w.stop()

    asyncio.run(main())


def test_control_never_answers_replies_or_notifications():
    from sipedge.io.modules import notification

    seen = []
    methods = {"note": lambda p: seen.append(p)}
    assert handle_control(methods, b'{"id": null, "error": "bad request"}') is None
    assert handle_control(methods, b'{"id": "1", "result": 3}') is None
    assert handle_control(methods, notification("note", {"a": 1})) is None
    assert handle_control(methods, notification("unknown", {})) is None
    assert seen == [{"a": 1}]
