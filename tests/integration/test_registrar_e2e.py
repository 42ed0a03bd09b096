"""Registrar, digest auth and edge security wired into the proxy, end to end with SIPp.

One sipedge process (2 workers, the shipped registrar_route.py script, a registrar database
in tmp_path) serves every test of this module, in order: subscribers are added over RPC,
SIPp registers alice and bob with digest auth and they call each other through the proxy;
an expired binding gives 480, an unknown user 404; the bindings survive a restart; wrong
passwords get 401 and then block the source; a flood from 127.0.0.2 is blocked while
127.0.0.3 still registers. Everything on 127.0.0.x, every SIPp run bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipedge.io.rpc import RpcError

from sip_harness import SCENARIOS, SipEdge, Sipp, free_port, make_config, needs_sipp

pytestmark = [needs_sipp, pytest.mark.needs_sipp]

ROUTE = Path(__file__).parents[2] / "app" / "sipedge" / "examples" / "registrar_route.py"
AUTH_FAILURES = 3


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    work = tmp_path_factory.mktemp("registrar")
    port = free_port()
    extra = f'''
[proxy]
domains = ["localhost"]

[routing]
script = "{ROUTE}"

[registrar]
db_path = "db/location.sqlite"
min_expires_s = 1
nat_keepalive_interval_s = 0
# SIPp registers from another socket than the UAS that takes the calls, which looks like NAT
nat_to_received = false

[auth]
algorithms = ["MD5"]

[security]
flood_window_s = 1.0
flood_max_requests = 40
flood_block_s = 60
trusted = ["127.0.0.1"]  # the callers and callees of the other tests
auth_max_failures = {AUTH_FAILURES}
'''
    config = make_config(str(work / "sipedge.ctl"), [("udp", "127.0.0.1", port)], workers=2,
                         extra=extra).replace(
        "[core]\n", '[core]\nmodules = ["security", "registrar", "auth"]\n', 1)
    proxy = SipEdge(work, config).start(workers=2)
    proxy.port = port
    sipp = Sipp(work)
    yield proxy, sipp, work
    sipp.stop()
    proxy.stop()


def _sipp(work: Path, scenario: str, port: int, *args: str, src: str = "127.0.0.1",
          calls: int = 1, rate: int = 10, timeout_s: int = 10) -> tuple[int, str]:
    """Run one SIPp UAC from `src` (SIPp -i binds the source address) to completion."""
    err = work / f"sipp-{Path(scenario).stem}-{src}.err"
    err.unlink(missing_ok=True)
    cmd = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", src, "-p", "0", "-m", str(calls),
           "-r", str(rate), "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error",
           "-recv_timeout", "3s", "-trace_err", "-error_file", str(err), *args,
           f"127.0.0.1:{port}"]
    p = subprocess.run(cmd, cwd=work, capture_output=True, timeout=timeout_s + 20)
    text = p.stdout.decode(errors="replace")[-1500:]
    if err.exists():
        text += err.read_text(errors="replace")[-3000:]
    return p.returncode, text


def _expecting(work: Path, template: str, final: int) -> str:
    """A copy of a scenario whose final reply is `final` (SIPp does not substitute keywords
    in recv attributes)."""
    out = work / f"{Path(template).stem}_{final}.xml"
    out.write_text((SCENARIOS / template).read_text().replace("[final]", str(final)))
    return str(out)


def _register(work, port, user, password, contact_port, expires=600, src="127.0.0.1"):
    return _sipp(work, "registrar/register.xml", port, "-s", user, "-au", user, "-ap", password,
                 "-key", "contact_port", str(contact_port), "-key", "expires", str(expires),
                 src=src)


def _call(work, port, callee, scenario="registrar/call_auth.xml", *extra, caller="alice",
          calls=1):
    return _sipp(work, scenario, port, "-s", callee, "-key", "caller", caller, "-au", caller,
                 "-ap", f"{caller}-pw", "-auth_uri", f"{callee}@localhost", *extra,
                 calls=calls)


def test_subscribers_added_over_rpc(edge):
    proxy, _, _ = edge
    for user in ("alice", "bob", "carol", "dave"):
        row = proxy.rpc("subscriber.add", {"username": user, "domain": "localhost",
                                           "password": f"{user}-pw"})
        assert row == {"username": user, "domain": "localhost",
                       "algorithms": ["MD5", "SHA-256"]}
    listed = proxy.rpc("subscriber.list", {"domain": "localhost"})
    assert sorted(r["username"] for r in listed) == ["alice", "bob", "carol", "dave"]
    assert "alice-pw" not in proxy.log()  # the password never reaches the log


def test_two_users_register_and_call_each_other(edge):
    proxy, sipp, work = edge
    alice_port, bob_port = free_port(), free_port()
    sipp.uas("uas", bob_port)
    sipp.uas("uas", alice_port)
    for user, contact in (("bob", bob_port), ("alice", alice_port)):
        rc, out = _register(work, proxy.port, user, f"{user}-pw", contact)
        assert rc == 0, out
    dump = proxy.rpc("ul.dump")
    assert dump["count"] == 2
    assert dump["aors"]["bob@localhost"][0]["contact"] == f"sip:bob@127.0.0.1:{bob_port}"
    # alice calls bob and bob calls alice, 5 calls each, 0 failed
    rc, out = _call(work, proxy.port, "bob", caller="alice", calls=5)
    assert rc == 0, out
    rc, out = _call(work, proxy.port, "alice", caller="bob", calls=5)
    assert rc == 0, out
    show = proxy.rpc("ul.show", {"aor": "alice@localhost"})
    assert len(show) == 1 and show[0]["user_agent"] == "SIPp e2e"


def test_unknown_user_404_and_expired_binding_480(edge):
    proxy, _, work = edge
    rc, out = _register(work, proxy.port, "carol", "carol-pw", free_port(), expires=1)
    assert rc == 0, out
    time.sleep(1.5)  # carol's binding expires
    rc, out = _call(work, proxy.port, "carol", _expecting(work, "registrar/call_expect.xml", 480))
    assert rc == 0, out
    rc, out = _call(work, proxy.port, "nobody", _expecting(work, "registrar/call_expect.xml", 404))
    assert rc == 0, out


def test_bindings_survive_a_restart(edge):
    proxy, _, work = edge
    before = proxy.rpc("ul.dump")["aors"]
    assert "bob@localhost" in before
    proxy.stop()
    proxy.start(workers=2)
    after = proxy.rpc("ul.dump")["aors"]
    assert {a: [b["contact"] for b in bs] for a, bs in after.items()} == \
        {a: [b["contact"] for b in bs] for a, bs in before.items()}
    rc, out = _call(work, proxy.port, "bob")  # the UAS is still running: the call works
    assert rc == 0, out


def test_wrong_password_401_then_blocked(edge):
    proxy, _, work = edge
    src = "127.0.0.4"
    for _ in range(AUTH_FAILURES):
        rc, out = _sipp(work, _expecting(work, "registrar/register_expect.xml", 401),
                        proxy.port, "-s", "dave", "-au", "dave", "-ap", "wrong",
                        "-key", "contact_port", "5999", "-key", "expires", "600", src=src)
        assert rc == 0, out
    # blocked now: even the right password gets no answer
    rc, _ = _register(work, proxy.port, "dave", "dave-pw", 5999, src=src)
    assert rc != 0
    blocked = proxy.rpc("sec.blocked")
    assert [b["ip"] for b in blocked] == [src] and blocked[0]["reason"] == "auth_failures"
    assert proxy.rpc("ul.show", {"aor": "dave@localhost"}) == []
    assert proxy.rpc("sec.unblock", {"ip": src}) is True
    rc, out = _register(work, proxy.port, "dave", "dave-pw", 5999, src=src)
    assert rc == 0, out


def test_flood_from_one_address_is_blocked_while_another_is_served(edge):
    proxy, _, work = edge
    rc, _ = _sipp(work, "registrar/options.xml", proxy.port, "-s", "nobody", src="127.0.0.2",
                  calls=200, rate=400, timeout_s=5)
    assert rc != 0  # most OPTIONS went unanswered
    blocked = {b["ip"]: b["reason"] for b in proxy.rpc("sec.blocked")}
    assert blocked.get("127.0.0.2") in ("flood", "blocked")
    rc, out = _register(work, proxy.port, "carol", "carol-pw", free_port(), src="127.0.0.3")
    assert rc == 0, out
    assert proxy.rpc("sec.unblock", {"ip": "127.0.0.2"}) is True


def test_sipedgectl_subscriber_add_and_ul_dump(edge):
    proxy, _, _ = edge
    ctl = [sys.executable, "-c", "from sipedge.cli import ctl_main; ctl_main()", "-s", proxy.ctl]
    p = subprocess.run(ctl + ["subscriber.add", "username=erin", "domain=localhost",
                              "password=1234"], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert b"erin" in p.stdout and b"1234" not in p.stdout
    p = subprocess.run(ctl + ["--json", "ul.dump"], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    aors = json.loads(p.stdout)["aors"]
    assert "bob@localhost" in aors and "alice@localhost" in aors
    p = subprocess.run(ctl + ["--json", "ul.show", "bob@localhost"], capture_output=True,
                       timeout=20)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["contact"].startswith("sip:bob@")
    assert "1234" not in proxy.log()


def test_ctl_errors(edge):
    proxy, _, _ = edge
    with pytest.raises(RpcError):
        proxy.rpc("sec.unblock", {"ip": "not-an-ip"})
    with pytest.raises(RpcError):
        proxy.rpc("subscriber.add", {"username": "x"})
    assert proxy.rpc("subscriber.rm", {"username": "dave", "domain": "localhost"}) is True
