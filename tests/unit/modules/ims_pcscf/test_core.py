"""The P-CSCF state machine without a kernel: REGISTER -> 401 -> protected REGISTER -> 200,
re-registration, de-registration, expiry, exhaustion."""

from __future__ import annotations

from sipedge.modules.ims_pcscf.core import PCSCF, Settings
from sipedge.sip.message import Response, parse_message
from sipedge.xfrm.model import DIR_IN, DIR_OUT
from sipmsg import request

UE_IP, P_IP = "192.0.2.20", "192.0.2.1"
CK = "0123456789abcdef0123456789abcdef"
IK = "fedcba9876543210fedcba9876543210"


def sc(spi_c=1111, spi_s=2222, port_c=5062, port_s=5064):
    return (f"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={spi_c};"
            f"spi-s={spi_s};port-c={port_c};port-s={port_s}")


def register(cseq, extra, call_id="reg1"):
    return request("REGISTER", "sip:ims.test", call_id=call_id, cseq=cseq,
                   to="<sip:alice@ims.test>", contacts=[f"<sip:alice@{UE_IP}:5064>"],
                   extra=["Require: sec-agree", "Proxy-Require: sec-agree", "Supported: path",
                          'Authorization: Digest username="alice@ims.test", realm="ims.test",'
                          ' nonce="", uri="sip:ims.test", response=""'] + extra)


def reply(req, status, extra=()):
    lines = [f"SIP/2.0 {status} X", f"Via: {req.get('via')}", f"To: {req.get('to')};tag=t",
             f"From: {req.get('from')}", f"Call-ID: {req.call_id}",
             f"CSeq: {req.cseq.seq} REGISTER", *extra, "Content-Length: 0", "", ""]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Response)
    return msg


def challenge(req, ck=CK, ik=IK):
    keys = (f', ck="{ck}"' if ck else "") + (f', ik="{ik}"' if ik else "")
    return reply(req, 401, [f'WWW-Authenticate: Digest realm="ims.test", nonce="abc", '
                            f'algorithm=AKAv1-MD5{keys}'])


def pc(**kw):
    return PCSCF(Settings(pcscf_ip=P_IP, port_base=5100, slots=kw.pop("slots", 4), **kw))


def full_register(p, now, cseq=1, spi_c=1111, spi_s=2222, port_c=5062, port_s=5064,
                  via=None, verify=None):
    """Returns the active set. `via` = (ue_port, local_port) of an existing set to send the
    unprotected-looking first REGISTER through (re-registration)."""
    r1 = register(cseq, [sc(spi_c, spi_s, port_c, port_s)] +
                  ([f"Security-Verify: {verify}"] if verify else []))
    src_port, local = via or (port_c, 5060)
    out = p.on_request(r1, UE_IP, src_port, local, now)
    assert out.reply is None, out.note
    c = challenge(r1)
    out = p.on_reply(c, now)
    st = out.ue_set
    assert [a.kind for a in out.actions] == ["install"]
    assert "ck=" not in c.get("www-authenticate") and "ik=" not in c.get("www-authenticate")
    server = c.get_all("security-server")
    assert len(server) == 1
    r2 = register(cseq + 1, [sc(spi_c, spi_s, port_c, port_s),
                             f"Security-Verify: {server[0]}"])
    out = p.on_request(r2, UE_IP, port_c, st.lease.port_ps, now + 1)
    assert out.reply is None, out.note
    assert not r2.has("security-verify") and not r2.has("security-client")
    assert not r2.has("require") and not r2.has("proxy-require")
    assert 'integrity-protected="yes"' in r2.get("authorization")
    ok = reply(r2, 200, [f"Contact: <sip:alice@{UE_IP}:5064>;expires=600"])
    out = p.on_reply(ok, now + 1)
    assert st.state == "active"
    assert out.actions[-1].kind == "update" and out.actions[-1].hard_seconds == 1 + 600 + 30
    return st, out


def test_four_pairs_with_ts33203_selectors():
    p = pc()
    st, _ = full_register(p, 100.0)
    sas, pols = st.sa_set.sas, st.sa_set.policies
    assert len(sas) == 4 and len(pols) == 4
    flows = {(s.src, s.selector.sport, s.dst, s.selector.dport, s.spi) for s in sas}
    assert flows == {
        (UE_IP, 5062, P_IP, st.lease.port_ps, st.lease.spi_ps),
        (P_IP, st.lease.port_ps, UE_IP, 5062, 1111),
        (P_IP, st.lease.port_pc, UE_IP, 5064, 2222),
        (UE_IP, 5064, P_IP, st.lease.port_pc, st.lease.spi_pc)}
    assert [p.direction for p in pols] == [DIR_IN, DIR_OUT, DIR_OUT, DIR_IN]
    # (daddr, spi) unique: no EEXIST among the four
    assert len({(s.dst, s.spi) for s in sas}) == 4
    assert all(s.auth_key == bytes.fromhex(IK) + bytes(4) and s.enc_key == bytes.fromhex(CK)
               for s in sas)
    assert "ck" not in repr(st.sa_set).lower().replace("cksum", "")


def test_unprotected_register_without_security_client_gets_494():
    p = pc()
    r = request("REGISTER", "sip:ims.test")
    out = p.on_request(r, UE_IP, 5062, 5060, 0.0)
    assert out.reply[0] == 494 and ("Require", "sec-agree") in out.reply[2]


def test_missing_ik_no_sa_and_configured_error():
    p = pc(missing_keys_status=403)
    r1 = register(1, [sc()])
    p.on_request(r1, UE_IP, 5062, 5060, 0.0)
    c = challenge(r1, ik=None)
    out = p.on_reply(c, 0.0)
    assert out.actions == [] and c.status == 403 and not c.has("www-authenticate")
    assert p.sets == [] and p.alloc.in_use == 0


def test_keys_stripped_even_without_sec_agree_request():
    p = pc()
    r = request("REGISTER", "sip:ims.test", call_id="other")
    c = challenge(r)
    p.on_reply(c, 0.0)
    assert "ck=" not in c.get("www-authenticate")


def test_bad_security_verify():
    p = pc()
    r1 = register(1, [sc()])
    p.on_request(r1, UE_IP, 5062, 5060, 0.0)
    c = challenge(r1)
    st = p.on_reply(c, 0.0).ue_set
    r2 = register(2, [sc(), "Security-Verify: ipsec-3gpp;alg=hmac-md5-96;spi-c=300;spi-s=301;"
                            "port-c=1;port-s=2"])
    assert p.on_request(r2, UE_IP, 5062, st.lease.port_ps, 1.0).reply[0] == 403
    r3 = register(2, [sc()])
    assert p.on_request(r3, UE_IP, 5062, st.lease.port_ps, 1.0).reply[0] == 494
    # a port that belongs to no set of this UE
    assert p.on_request(r3, "192.0.2.99", 5062, st.lease.port_ps, 1.0).reply[0] == 403


def test_reregistration_x50_no_accumulation():
    p = pc(slots=3)
    st, _ = full_register(p, 0.0)
    removed = 0
    for i in range(50):
        now = 10.0 * (i + 1)
        port_c = 6000 + 2 * i
        new, _ = full_register(p, now, cseq=10 + 3 * i, spi_c=3000 + 2 * i, spi_s=3001 + 2 * i,
                               port_c=port_c, port_s=5064,
                               via=(st.offer.port_c, st.lease.port_ps), verify=_server(st))
        assert st.state == "old"  # kept until the first request on the new set
        # first request on the new set (an INVITE, or the next re-REGISTER) retires it
        inv = request("INVITE", "sip:bob@ims.test", call_id=f"inv{i}")
        out = p.on_request(inv, UE_IP, port_c, new.lease.port_ps, now + 2)
        assert [a.kind for a in out.actions] == ["remove"] and out.actions[0].ue_set is st
        assert p.alloc.in_use == 2  # leased until the kernel objects are gone
        p.removed(st)
        removed += 1
        st = new
        assert len(p.sets) == 1 and p.alloc.in_use == 1
    assert removed == 50


def test_deregister_removes_after_reply():
    p = pc()
    st, _ = full_register(p, 0.0)
    r = register(5, [sc(), f"Security-Verify: {_server(st)}"])
    r.set("contact", f"<sip:alice@{UE_IP}:5064>;expires=0")
    assert p.on_request(r, UE_IP, 5062, st.lease.port_ps, 5.0).reply is None
    out = p.on_reply(reply(r, 200), 5.0)
    assert [a.kind for a in out.actions] == ["remove"] and p.sets == []


def _server(st):
    from sipedge.modules.ims_pcscf.secagree import format_mechanism
    return format_mechanism(st.server)


def test_expiry_and_pending_lifetime():
    p = pc(pending_lifetime_s=20)
    r1 = register(1, [sc()])
    p.on_request(r1, UE_IP, 5062, 5060, 0.0)
    p.on_reply(challenge(r1), 0.0)
    assert p.expire(19.0) == []
    (act,) = p.expire(20.0)
    assert p.alloc.in_use == 1 and p.sets == []
    p.removed(act.ue_set)
    assert p.alloc.in_use == 0
    st, _ = full_register(p, 100.0)
    assert p.expire(700.0) == [] and [a.ue_set for a in p.expire(701.0)] == [st]


def test_exhaustion_gives_503_not_crash():
    p = pc(slots=1)
    full_register(p, 0.0)
    r = register(1, [sc(9000, 9001, 7000, 7002)], call_id="ue2")
    p.on_request(r, "192.0.2.30", 7000, 5060, 1.0)
    c = challenge(r)
    out = p.on_reply(c, 1.0)
    assert c.status == 503 and out.actions == [] and "ck=" not in str(c.to_bytes())


def test_unprotected_request_from_registered_ue_refused():
    p = pc()
    full_register(p, 0.0)
    inv = request("INVITE", "sip:bob@ims.test")
    assert p.on_request(inv, UE_IP, 5062, 5060, 1.0).reply[0] == 403


def test_other_pending_set_does_not_hide_the_active_one():
    """A pending set of another AoR from the same UE address (a REGISTER that got its 401
    but never came back) must not keep the previous active set from becoming old."""
    p = pc()
    first, _ = full_register(p, 0.0)
    r = register(1, [sc(7000, 7001, 7002, 7004)], call_id="bob")
    p.on_request(r, UE_IP, 7002, 5060, 1.0)
    bob = p.on_reply(challenge(r), 1.0).ue_set
    p.sets.remove(bob)
    p.sets.insert(0, bob)  # first in the list: the case list mutation got wrong
    new, _ = full_register(p, 2.0, cseq=10, spi_c=3000, spi_s=3001, port_c=6000,
                           via=(first.offer.port_c, first.lease.port_ps),
                           verify=_server(first))
    assert first.state == "old" and bob.state == "deleted" and new.state == "active"


# -- TS 24.229 / RFC 3329 option-tag handling ------------------------------------------


def test_401_to_the_ue_requires_sec_agree_when_the_ue_asked_for_it():
    """RFC 3261 8.2.2.3: the Security-Server in the 401 applies sec-agree, so the 401 lists
    it in Require; the UE named the tag (TS 24.229 5.1.1.2: Require and Proxy-Require)."""
    p = pc()
    r1 = register(1, [sc()])
    p.on_request(r1, UE_IP, 5062, 5060, 0.0)
    c = challenge(r1)
    p.on_reply(c, 0.0)
    assert c.get_all("require") == ["sec-agree"] and len(c.get_all("security-server")) == 1


def test_401_require_not_doubled_and_not_added_when_the_ue_never_named_the_tag():
    p = pc()
    r1 = request("REGISTER", "sip:ims.test", call_id="untagged", to="<sip:alice@ims.test>",
                 extra=[sc()])
    p.on_request(r1, UE_IP, 5062, 5060, 0.0)
    c = challenge(r1)
    p.on_reply(c, 0.0)
    assert c.get_all("security-server") and not c.has("require")
    r2 = register(1, [sc()], call_id="tagged")
    p.on_request(r2, UE_IP, 5062, 5060, 0.0)
    c2 = challenge(r2)
    c2.add("Require", "path, sec-agree")
    p.on_reply(c2, 0.0)
    assert c2.get_all("require") == ["path", "sec-agree"]


def test_sec_agree_tag_removed_from_lists_before_the_register_goes_on():
    """RFC 3329 2.3.1 / TS 24.228: the P-CSCF takes sec-agree out of Require, Proxy-Require
    (and Supported: the agreement is with the first hop only), other tags stay, empty
    headers go."""
    p = pc()
    r1 = request("REGISTER", "sip:ims.test", call_id="lists", to="<sip:alice@ims.test>",
                 extra=[sc(), "Require: sec-agree, path", "Proxy-Require: sec-agree",
                        "Supported: path, sec-agree, gruu"])
    assert p.on_request(r1, UE_IP, 5062, 5060, 0.0).reply is None
    assert r1.get_all("require") == ["path"] and not r1.has("proxy-require")
    assert r1.get_all("supported") == ["path", "gruu"] and not r1.has("security-client")


def test_494_names_sec_agree_in_require_and_lists_the_mechanisms():
    p = pc()
    out = p.on_request(request("REGISTER", "sip:ims.test", extra=["Require: sec-agree"]),
                       UE_IP, 5062, 5060, 0.0)
    status, _, headers = out.reply
    assert status == 494 and ("Require", "sec-agree") in headers
    assert any(h == "Security-Server" and "ipsec-3gpp" in v for h, v in headers)


def test_more_than_one_worker_is_refused_with_the_reason():
    """docs/ims.md "One worker": the set table and the protected TCP connections live in one
    process, so the config check refuses workers = 2 and points to the explanation."""
    import pytest

    from sipedge.config import ConfigError, load_text

    text = ('[core]\nworkers = 2\nmodules = ["ims_pcscf"]\n'
            '[ims_pcscf]\naddress = "192.0.2.1"\n')
    with pytest.raises(ConfigError) as info:
        load_text(text, "c.toml")
    (err,) = [str(e) for e in info.value.errors]
    assert "c.toml:2: core.workers" in err and "workers = 1" in err and "One worker" in err
    assert load_text(text.replace("workers = 2", "workers = 1"), "c.toml").core.workers == 1
