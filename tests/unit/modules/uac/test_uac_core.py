"""uac_auth decisions (modules/uac/core.py) and the CSeq fix-ups (modules/uac/cseq.py)."""

from __future__ import annotations

from sipedge.modules.auth.digest import parse_digest
from sipedge.modules.uac.core import Answer, Credentials, NoAnswer, Trunk, answer, strip_credentials
from sipedge.modules.uac.cseq import CSeqMap
from sipedge.modules.uac.digest import ChallengeMemory
from sipedge.sip.message import parse_message

CREDS = Credentials([Trunk("carrier", "carrier.example", "box1", "s3cret")])
CH = 'Digest realm="carrier.example", nonce="n1", qop="auth"'


def ask(headers, status=407, memory=None, cseq=10):
    return answer(method="INVITE", uri="sip:112@carrier.example", body=b"", status=status,
                  reply_headers=headers, upstream_cseq=cseq, creds=CREDS,
                  memory=memory or ChallengeMemory(), cnonce="cn")


def test_answer_407_with_trunk_credentials():
    a = ask([("proxy-authenticate", CH)])
    assert isinstance(a, Answer) and a.cseq == 11 and a.realms == ("carrier.example",)
    name, value = a.headers[0]
    assert name == "Proxy-Authorization"
    assert parse_digest(value)[1]["username"] == "box1"


def test_unknown_realm_goes_upstream():
    a = ask([("proxy-authenticate", 'Digest realm="other", nonce="n"')])
    assert isinstance(a, NoAnswer) and a.realm == "other" and not a.malformed


def test_malformed_challenge_is_an_ordinary_failure():
    a = ask([("www-authenticate", 'Digest realm="carrier.example, nonce=')], status=401)
    assert isinstance(a, NoAnswer) and a.malformed


def test_unknown_algorithm_goes_upstream():
    a = ask([("www-authenticate", 'Digest realm="carrier.example", nonce="n", '
              'algorithm=AKAv1-MD5')], status=401)
    assert isinstance(a, NoAnswer) and "AKAv1-MD5" in a.reason


def test_same_nonce_twice_goes_upstream_stale_retries_once():
    mem = ChallengeMemory()
    assert isinstance(ask([("proxy-authenticate", CH)], memory=mem), Answer)
    again = ask([("proxy-authenticate", CH)], memory=mem, cseq=11)
    assert isinstance(again, NoAnswer) and "repeated" in again.reason
    stale = ask([("proxy-authenticate", CH.replace("n1", "n2") + ", stale=true")], memory=mem,
                cseq=11)
    assert isinstance(stale, Answer) and stale.cseq == 12
    stale2 = ask([("proxy-authenticate", CH.replace("n1", "n3") + ", stale=true")], memory=mem,
                 cseq=12)
    assert isinstance(stale2, NoAnswer)


def test_strip_previous_credentials_of_realm():
    hdrs = [["proxy-authorization", "Proxy-Authorization",
             'Digest username="a", realm="carrier.example", nonce="x", uri="u", response="r"'],
            ["proxy-authorization", "Proxy-Authorization",
             'Digest username="a", realm="other", nonce="x", uri="u", response="r"'],
            ["via", "Via", "SIP/2.0/UDP h"]]
    strip_credentials(hdrs, ("carrier.example",))
    assert len(hdrs) == 2 and "other" in hdrs[0][2]


def msg(text: str):
    return parse_message(text.replace("\n", "\r\n").encode())


def req(method, cseq, from_tag="ft", to_tag="tt"):
    return msg(f"""{method} sip:b@h SIP/2.0
Via: SIP/2.0/UDP c;branch=z9hG4bKx
From: <sip:a@h>;tag={from_tag}
To: <sip:b@h>;tag={to_tag}
Call-ID: cid
CSeq: {cseq} {method}
Content-Length: 0

""")


def resp(status, method, cseq, from_tag="ft"):
    return msg(f"""SIP/2.0 {status} X
Via: SIP/2.0/UDP c;branch=z9hG4bKx
From: <sip:a@h>;tag={from_tag}
To: <sip:b@h>;tag=tt
Call-ID: cid
CSeq: {cseq} {method}
Content-Length: 0

""")


def test_cseq_map_fixes_both_directions():
    m = CSeqMap()
    m.bumped("cid", "ft", 1, now=0.0)  # INVITE 1 went upstream as 2
    r = resp(200, "INVITE", 2)
    assert m.fix_response(r, 1.0) and r.cseq.seq == 1
    old = resp(407, "INVITE", 1)  # a late retransmission of the first challenge
    assert not m.fix_response(old, 1.0) and old.cseq.seq == 1
    ack = req("ACK", 1)
    assert m.fix_request(ack, 1.0) and ack.cseq.seq == 2
    bye = req("BYE", 2)
    assert m.fix_request(bye, 2.0) and bye.cseq.seq == 3
    ok = resp(200, "BYE", 3)
    assert m.fix_response(ok, 2.0) and ok.cseq.seq == 2
    # the callee's own requests (From = its tag) keep their numbering
    callee_bye = req("BYE", 7, from_tag="tt", to_tag="ft")
    assert not m.fix_request(callee_bye, 2.0) and callee_bye.cseq.seq == 7
    # CANCEL is hop by hop: never shifted
    cancel = req("CANCEL", 1)
    assert not m.fix_request(cancel, 2.0)


def test_cseq_map_second_challenge_and_bounds():
    m = CSeqMap(max_entries=2, idle_s=10)
    m.bumped("cid", "ft", 1, now=0.0)
    m.bumped("cid", "ft", 1, now=0.0)  # a second challenge on the same INVITE
    assert m.delta("cid", "ft") == 2
    r = resp(200, "INVITE", 3)
    assert m.fix_response(r, 0) and r.cseq.seq == 1
    m.bumped("c2", "x", 5, now=0.0)
    m.bumped("c3", "x", 5, now=0.0)
    assert len(m) == 2 and m.delta("cid", "ft") == 0  # oldest dropped
    assert m.purge(100.0) == 2 and len(m) == 0


def test_failed_authenticated_request_puts_the_shift_back():
    m = CSeqMap()
    m.shifted("cid", "ft", 1, 2, 0, now=0.0)  # INVITE 1 went up as 2
    again = resp(407, "INVITE", 2)  # refused: goes to the caller as 1
    assert m.fix_response(again, 1.0) and again.cseq.seq == 1
    assert len(m) == 0  # the caller's own retry (CSeq 2) is not shifted
    own = resp(200, "INVITE", 2)
    assert not m.fix_response(own, 2.0) and own.cseq.seq == 2
    # a re-INVITE inside a dialog shifted by 1, challenged and refused: back to 1
    m.shifted("cid", "ft", 1, 2, 0, now=3.0)
    assert m.fix_response(resp(200, "INVITE", 2), 3.0)  # settled
    m.shifted("cid", "ft", 5, 7, 1, now=4.0)  # re-INVITE 5 (sent as 6) answered as 7
    assert m.delta("cid", "ft") == 2
    refused = resp(407, "INVITE", 7)
    assert m.fix_response(refused, 5.0) and refused.cseq.seq == 5
    assert m.delta("cid", "ft") == 1
