"""REGISTER processing (RFC 3261 10.3, RFC 3327) and lookup, sans-IO: `now` is a number."""

from __future__ import annotations

import pytest

from sipedge.errors import RemoteProtocolError
from sipedge.modules import ReplySpec
from sipedge.modules.registrar.core import (Binding, RegisterRequest, Source, apply_register,
                                            contact_key, lookup, lookup_reply, parse_q,
                                            parse_register, q_groups)
from sipedge.modules.registrar.params import RegistrarParams
from sipmsg import request

P = RegistrarParams(min_expires_s=60, max_expires_s=3600, default_expires_s=1800,
                    max_contacts=3)
SRC = Source("203.0.113.5", 40000, "udp", "udp:127.0.0.1:5060")
NOW = 1_700_000_000.0


def reg(contacts=(), *, call_id="c1", cseq=1, extra=(), params=P, src=SRC):
    r = parse_register(request(contacts=list(contacts), call_id=call_id, cseq=cseq,
                               extra=list(extra)), params, src)
    return r


class Db:
    """The AOR's stored rows, updated the way the store applies an outcome."""

    def __init__(self) -> None:
        self.rows: dict[str, Binding] = {}

    def run(self, r, now=NOW, params=P):
        assert isinstance(r, RegisterRequest), r
        out = apply_register(r, list(self.rows.values()), params, now)
        if out.ok:
            for k in out.deletes:
                self.rows.pop(k, None)
            for b in out.upserts:
                self.rows[b.key] = b
        return out


def contacts_of(reply: ReplySpec) -> list[str]:
    return [v for n, v in reply.headers if n == "Contact"]


def test_expires_from_param_header_and_default():
    db = Db()
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=120", "<sip:b@192.0.2.2>"],
                     extra=["Expires: 300"]))
    assert out.reply.status == 200
    assert sorted(contacts_of(out.reply)) == ["<sip:a@192.0.2.1>;expires=120",
                                              "<sip:b@192.0.2.2>;expires=300"]
    out = db.run(reg(["<sip:c@192.0.2.3>"], call_id="c2"))
    assert "<sip:c@192.0.2.3>;expires=1800" in contacts_of(out.reply)
    # the 200 lists every binding of the AOR, with what remains of its expires
    out = db.run(reg([], call_id="c3"), now=NOW + 20)
    assert sorted(contacts_of(out.reply)) == ["<sip:a@192.0.2.1>;expires=100",
                                              "<sip:b@192.0.2.2>;expires=280",
                                              "<sip:c@192.0.2.3>;expires=1780"]
    assert any(n == "Date" for n, _ in out.reply.headers)


def test_min_and_max_expires():
    r = reg(["<sip:a@192.0.2.1>;expires=30"])
    assert r == ReplySpec(423, "Interval Too Brief", (("Min-Expires", "60"),))
    r = reg(["<sip:a@192.0.2.1>"], extra=["Expires: 59"])
    assert r.status == 423
    db = Db()
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=99999"]))
    assert contacts_of(out.reply) == ["<sip:a@192.0.2.1>;expires=3600"]
    # a malformed expires counts as absent; 0 is not "too brief"
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=abc"], cseq=2))
    assert contacts_of(out.reply) == ["<sip:a@192.0.2.1>;expires=1800"]
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=0"], cseq=3))
    assert contacts_of(out.reply) == [] and db.rows == {}


def test_q_values_order_the_reply_and_lookup():
    db = Db()
    db.run(reg(["<sip:low@192.0.2.1>;q=0.1", "<sip:high@192.0.2.2>;q=1.0",
                "<sip:mid@192.0.2.3>;q=0.5"]))
    targets = lookup(list(db.rows.values()), NOW + 1, nat_to_received=True)
    assert [t.uri for t in targets] == ["sip:high@192.0.2.2", "sip:mid@192.0.2.3",
                                        "sip:low@192.0.2.1"]
    assert [t.q for t in targets] == [1000, 500, 100]
    assert [[t.uri for t in g] for g in q_groups(targets)] == [
        ["sip:high@192.0.2.2"], ["sip:mid@192.0.2.3"], ["sip:low@192.0.2.1"]]
    out = db.run(reg([], call_id="q"))
    assert contacts_of(out.reply)[1] == "<sip:mid@192.0.2.3>;expires=1800;q=0.5"


@pytest.mark.parametrize("text,value", [("0", 0), ("1", 1000), ("0.5", 500), ("0.125", 125),
                                        ("1.000", 1000), ("0.", 0), ("1.0", 1000)])
def test_parse_q(text, value):
    assert parse_q(text) == value


@pytest.mark.parametrize("text", ["2", "1.5", "0.1234", "-0.1", "abc", "", "1.01", "０"])
def test_parse_q_refuses(text):
    with pytest.raises(RemoteProtocolError):
        parse_q(text)


def test_bad_q_is_400():
    assert reg(["<sip:a@192.0.2.1>;q=7"]).status == 400


def test_star_removes_everything_only_with_expires_zero():
    db = Db()
    db.run(reg(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]))
    assert reg(["*"], call_id="x").status == 400  # no Expires: 0
    assert reg(["*"], call_id="x", extra=["Expires: 10"]).status == 400
    assert reg(["*", "<sip:c@192.0.2.3>"], call_id="x", extra=["Expires: 0"]).status == 400
    out = db.run(reg(["*"], call_id="other", extra=["Expires: 0"]))
    assert out.reply.status == 200 and contacts_of(out.reply) == [] and db.rows == {}


def test_star_with_same_call_id_needs_a_higher_cseq():
    db = Db()
    db.run(reg(["<sip:a@192.0.2.1>"], cseq=5))
    out = db.run(reg(["*"], cseq=5, extra=["Expires: 0"]))
    assert out.reply.status == 500 and len(db.rows) == 1
    assert db.run(reg(["*"], cseq=6, extra=["Expires: 0"])).reply.status == 200
    assert db.rows == {}


def test_out_of_order_register_is_refused_and_nothing_changes():
    db = Db()
    db.run(reg(["<sip:a@192.0.2.1>;expires=100"], cseq=10))
    before = dict(db.rows)
    for cseq in (10, 9):
        out = db.run(reg(["<sip:a@192.0.2.1>;expires=0", "<sip:new@192.0.2.9>"], cseq=cseq))
        assert out.reply.status == 500 and not out.upserts and not out.deletes
    assert db.rows == before
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=200"], cseq=11))
    assert contacts_of(out.reply) == ["<sip:a@192.0.2.1>;expires=200"]
    # another Call-ID (the UA rebooted) may update whatever its CSeq
    out = db.run(reg(["<sip:a@192.0.2.1>;expires=300"], call_id="reboot", cseq=1))
    assert contacts_of(out.reply) == ["<sip:a@192.0.2.1>;expires=300"]


def test_contact_uri_comparison():
    assert contact_key("sip:a@HOST.example;transport=TCP;lr") == \
        contact_key("sip:a@host.example;lr;transport=tcp")
    assert contact_key("sip:a@host") != contact_key("sip:A@host")
    assert contact_key("sip:a@host:5060") != contact_key("sip:a@host")
    db = Db()
    db.run(reg(["<sip:a@Host.Example;transport=TCP>"]))
    db.run(reg(["<sip:a@host.example;transport=tcp>;expires=0"], cseq=2))
    assert db.rows == {}


def test_max_contacts():
    db = Db()
    db.run(reg([f"<sip:u{i}@192.0.2.{i}>" for i in range(3)]))
    out = db.run(reg(["<sip:u9@192.0.2.9>"], call_id="c2"))
    assert out.reply.status == 403 and len(db.rows) == 3


def test_expired_bindings_are_dropped_on_the_next_register():
    db = Db()
    db.run(reg(["<sip:old@192.0.2.1>;expires=60"]))
    out = db.run(reg(["<sip:new@192.0.2.2>"], call_id="c2"), now=NOW + 61)
    assert contacts_of(out.reply) == ["<sip:new@192.0.2.2>;expires=1800"]
    assert list(db.rows) == [contact_key("sip:new@192.0.2.2")]


def test_binding_remembers_source_for_nat_and_lookup_uses_it():
    db = Db()
    r = parse_register(request(contacts=["<sip:a@10.0.0.5:5062>"]), P, SRC, nat=True)
    db.run(r)
    [b] = db.rows.values()
    assert (b.received, b.transport, b.socket, b.nat) == (
        "sip:203.0.113.5:40000", "udp", "udp:127.0.0.1:5060", True)
    [t] = lookup([b], NOW + 1)
    assert (t.uri, t.dst_uri, t.socket) == ("sip:a@10.0.0.5:5062", "sip:203.0.113.5:40000",
                                            "udp:127.0.0.1:5060")
    assert lookup([b], NOW + 1, nat_to_received=False)[0].dst_uri == ""
    tcp = Source("2001:db8::1", 5061, "tls", "tls:[::]:5061")
    assert tcp.received_uri == "sip:[2001:db8::1]:5061;transport=tls"


def test_path_modes():
    path = ["Path: <sip:edge1.example.net;lr>", "Path: <sip:edge2.example.net;lr>"]
    r = reg(["<sip:a@192.0.2.1>"], extra=path)
    assert r == ReplySpec(420, "Bad Extension", (("Unsupported", "path"),))
    db = Db()
    out = db.run(reg(["<sip:a@192.0.2.1>"], extra=path + ["Supported: path, outbound"]))
    assert [v for n, v in out.reply.headers if n == "Path"] == [
        "<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>"]
    [t] = lookup(list(db.rows.values()), NOW)
    assert t.path == ("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr>")
    lazy = RegistrarParams(path_mode="lazy")
    out = Db().run(reg(["<sip:a@192.0.2.1>"], extra=path, params=lazy), params=lazy)
    assert out.ok and not [n for n, _ in out.reply.headers if n == "Path"]
    assert out.upserts[0].path  # stored all the same
    off = RegistrarParams(path_mode="off")
    out = Db().run(reg(["<sip:a@192.0.2.1>"], extra=path, params=off), params=off)
    assert out.upserts[0].path == ()


def test_outbound_instance_replaces_the_old_flow():
    db = Db()
    inst = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
    db.run(reg([f"<sip:a@192.0.2.1:5060>;{inst}"]))
    out = db.run(reg([f"<sip:a@192.0.2.1:6000>;{inst}"], call_id="c2"))
    assert contacts_of(out.reply) == [f"<sip:a@192.0.2.1:6000>;expires=1800;{inst}"]
    assert len(db.rows) == 1


def test_malformed_requests_are_400():
    assert reg(["<sip:a@192.0.2.1"]).status == 400
    assert reg(["<mailto:a@example.com>"]).status == 400
    r = parse_register(request(to="<http://example.com/x>"), P, SRC)
    assert r.status in (400, 416)


def test_lookup_reply():
    assert lookup_reply(False, []) == ReplySpec(404, "Not Found")
    assert lookup_reply(True, []) == ReplySpec(480, "Temporarily Unavailable")


from hypothesis import given, settings, strategies as st  # noqa: E402

_VALUE = st.text(alphabet=st.sampled_from(list('<>sip:a@b.c;=q0.15*"expires, \\-')),
                 max_size=40)


@settings(max_examples=200, deadline=None)
@given(contacts=st.lists(_VALUE, max_size=3), expires=st.one_of(st.none(), _VALUE))
def test_garbage_register_only_gets_a_reply(contacts, expires):
    extra = [f"Expires: {expires}"] if expires is not None else []
    try:
        req = request(contacts=[c for c in contacts if c.strip()], extra=extra)
    except RemoteProtocolError:
        return  # the parser already refused it
    r = parse_register(req, P, SRC)
    if isinstance(r, RegisterRequest):
        out = apply_register(r, [], P, NOW)
        assert out.reply.status in (200, 403)
    else:
        assert 400 <= r.status < 500
