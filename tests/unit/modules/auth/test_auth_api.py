"""The auth module instance and its script API over a real subscriber store."""

from __future__ import annotations

import asyncio

import pytest
from test_auth_digest import client_authorization

from sipedge.config.loader import load_text
from sipedge.errors import ConfigError
from sipedge.modules.auth import api
from sipedge.modules.auth.core import Auth
from sipedge.modules.auth.digest import AuthResult
from sipedge.modules.auth.params import AuthParams
from sipedge.modules.auth.rpc import subscriber_add, subscriber_list, subscriber_rm
from sipedge.modules.registrar.aio import AsyncStore
from sipedge.modules.registrar.store import Store
from sipedge.modules.security.core import Security
from sipedge.modules.security.params import SecurityParams
from sipmsg import FakeMsg, request

SECRET = b"k" * 32


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    subscriber_add(s, "alice", "example.com", "pw")
    yield s
    s.close()


def _register(auth_value=None, uri="sip:example.com"):
    extra = [f"Authorization: {auth_value}"] if auth_value else []
    return request("REGISTER", uri, contacts=["<sip:alice@192.0.2.10>"], extra=extra)


def test_register_gets_401_invite_gets_407(store):
    auth = Auth(AuthParams(algorithms=["SHA-256", "MD5"]), SECRET, store)
    r = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0)
    assert (r.status, r.reason) == (401, "Unauthorized")
    assert [n for n, _ in r.headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    assert "algorithm=SHA-256" in r.headers[0][1] and "algorithm=MD5" in r.headers[1][1]
    assert 'realm="example.com"' in r.headers[0][1]
    inv = request("INVITE", "sip:bob@example.com", to="<sip:bob@example.com>",
                  from_="<sip:alice@example.com>")
    r = api.auth_challenge(auth, FakeMsg(inv), now=1000.0)
    assert r.status == 407 and r.headers[0][0] == "Proxy-Authenticate"
    assert 'realm="example.com"' in r.headers[0][1]  # From domain for non-REGISTER


@pytest.mark.parametrize("which", [0, 1])  # SHA-256 and MD5 challenge
def test_full_exchange(store, which):
    auth = Auth(AuthParams(algorithms=["SHA-256", "MD5"]), SECRET, store)
    ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[which][1]
    creds = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    out = api.auth_check(auth, FakeMsg(_register(creds)), now=1001.0)
    assert out.ok and out.verdict.username == "alice"


def test_proxy_auth_for_invite_and_consume(store):
    auth = Auth(AuthParams(), SECRET, store)
    inv = request("INVITE", "sip:bob@example.com", to="<sip:bob@example.com>",
                  from_="<sip:alice@example.com>")
    ch = api.auth_challenge(auth, FakeMsg(inv), now=1000.0).headers[0][1]
    creds = client_authorization(ch, "alice", "pw", "INVITE", "sip:bob@example.com")
    inv2 = request("INVITE", "sip:bob@example.com", to="<sip:bob@example.com>",
                   from_="<sip:alice@example.com>",
                   extra=[f"Proxy-Authorization: {creds}",
                          'Proxy-Authorization: Digest realm="upstream", username="u"'])
    msg = FakeMsg(inv2)
    assert api.auth_check(auth, msg, now=1001.0).ok
    assert api.consume_credentials(auth, msg) == 1
    assert msg.raw.get_all("proxy-authorization") == ['Digest realm="upstream", username="u"']


def test_failure_replies(store):
    auth = Auth(AuthParams(), SECRET, store)
    ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[0][1]
    wrong = client_authorization(ch, "alice", "bad", "REGISTER", "sip:example.com")
    out = api.auth_check(auth, FakeMsg(_register(wrong)), now=1001.0)
    assert out.verdict.result is AuthResult.WRONG_PASSWORD and out.reply.status == 401
    assert "stale" not in out.reply.headers[0][1]
    strict = Auth(AuthParams(wrong_password_status=403), SECRET, store)
    assert api.auth_check(strict, FakeMsg(_register(wrong)), now=1001.0).reply.status == 403
    out = api.auth_check(auth, FakeMsg(_register("Digest username=")), now=1001.0)
    assert out.reply.status == 400
    # stale: right password, old nonce -> new challenge with stale=true
    good = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    out = api.auth_check(auth, FakeMsg(_register(good)), now=1000.0 + 301)
    assert out.reply.status == 401 and "stale=true" in out.reply.headers[0][1]
    # no credentials: a plain challenge
    out = api.auth_check(auth, FakeMsg(_register()), now=1001.0)
    assert out.verdict.result is AuthResult.NO_CREDENTIALS and out.reply.status == 401


def test_failures_block_the_source(store):
    auth = Auth(AuthParams(), SECRET, store)
    sec = Security(SecurityParams(auth_max_failures=3))
    ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[0][1]
    wrong = client_authorization(ch, "alice", "bad", "REGISTER", "sip:example.com")
    for i in range(3):
        api.auth_check(auth, FakeMsg(_register(wrong), src_ip="198.51.100.9"), now=1001.0 + i,
                       security=sec)
    assert sec.check_request("198.51.100.9", "udp:127.0.0.1:5060", None, 1005.0).reason == \
        "blocked"
    assert sec.check_request("198.51.100.10", "udp:127.0.0.1:5060", None, 1005.0).accepted


def test_needs_auth_by_method_and_domain(store):
    auth = Auth(AuthParams(challenge_methods=["REGISTER", "INVITE"], domains=["example.com"]),
                SECRET, store)
    assert auth.needs_auth(_register())
    assert not auth.needs_auth(request("OPTIONS", "sip:example.com"))
    assert not auth.needs_auth(request("REGISTER", "sip:other.org",
                                       to="<sip:alice@other.org>"))


def test_async_check_fetches_ha1_in_the_db_thread(tmp_path):
    async def main():
        store = await AsyncStore.open(tmp_path / "a.sqlite")
        await store.run(lambda s: subscriber_add(s, "alice", "example.com", "pw"))
        auth = Auth(AuthParams(), SECRET, subscribers=None)  # type: ignore[arg-type]
        ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[0][1]
        good = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
        wrong = client_authorization(ch, "alice", "x", "REGISTER", "sip:example.com")
        ok = await api.auth_check_async(auth, FakeMsg(_register(good)), 1001.0, store)
        bad = await api.auth_check_async(auth, FakeMsg(_register(wrong)), 1001.0, store)
        await store.close()
        return ok, bad

    ok, bad = asyncio.run(main())
    assert ok.ok and bad.verdict.result is AuthResult.WRONG_PASSWORD
    # the row whose HA1 matched (ksr.registrar.save need not read it again); none on failure
    assert ok.subscriber == (ok.verdict.username, "example.com") and bad.subscriber is None


def test_subscriber_rpc_never_stores_the_password(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    out = subscriber_add(s, "bob", "Example.COM", "hunter2")
    assert out == {"username": "bob", "domain": "example.com", "algorithms": ["MD5", "SHA-256"]}
    assert subscriber_list(s) == [out]
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # db, and WAL if left over
    assert b"hunter2" not in raw
    s = Store(tmp_path / "s.sqlite")
    assert s.get_ha1("bob", "example.com", "MD5") is not None
    with pytest.raises(ValueError):
        subscriber_add(s, "x", "example.com", "pw", ha1_md5="0" * 32)
    with pytest.raises(ValueError):
        subscriber_add(s, "x", "example.com", ha1_md5="zz")
    assert subscriber_add(s, "carol", "example.com", ha1_sha256="a" * 64)["algorithms"] == \
        ["SHA-256"]
    assert s.get_ha1("carol", "example.com", "MD5") is None
    assert subscriber_rm(s, "bob", "example.com") and not subscriber_rm(s, "bob", "example.com")
    s.close()


def test_params_load_from_toml():
    cfg = load_text('[auth]\nrealm = "example.com"\nalgorithms = ["MD5"]\n'
                    'nonce_expires_s = 60\nwrong_password_status = 403\n')
    assert cfg.auth == AuthParams(realm="example.com", algorithms=["MD5"], nonce_expires_s=60,
                                  wrong_password_status=403)
    with pytest.raises(ConfigError) as e:
        load_text("[auth]\nnonce_expires_s = 1\nwrong_password_status = 404\nrelm = 'x'\n")
    text = str(e.value)
    assert "auth.nonce_expires_s" in text and "auth.wrong_password_status" in text
    assert "relm" in text


def test_configured_realm_differs_from_the_domain(tmp_path):
    s = Store(tmp_path / "r.sqlite")
    subscriber_add(s, "alice", "example.com", "pw", realm="Example Edge")
    auth = Auth(AuthParams(realm="Example Edge"), SECRET, s)
    ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[0][1]
    assert 'realm="Example Edge"' in ch
    creds = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
    assert api.auth_check(auth, FakeMsg(_register(creds)), now=1001.0).ok

    async def via_async_store():
        store = await AsyncStore.open(tmp_path / "r.sqlite")
        ch = api.auth_challenge(auth, FakeMsg(_register()), now=1000.0).headers[0][1]
        creds = client_authorization(ch, "alice", "pw", "REGISTER", "sip:example.com")
        out = await api.auth_check_async(auth, FakeMsg(_register(creds)), 1001.0, store)
        await store.close()
        return out

    assert asyncio.run(via_async_store()).ok
    s.close()
