"""Requests we originate (new_request) and the once-only warning for challenges we cannot
answer (UacClient._warn_once); no event loop needed."""

from __future__ import annotations

import logging

import pytest

from sipedge.modules.uac.aio import UacClient, new_request
from sipedge.modules.uac.core import Credentials
from sipedge.sip.transaction import TimerValues


def test_new_request_headers():
    req = new_request("message", "sip:op@127.0.0.1:5090", "sip:edge@box", "Op <sip:op@h>",
                      headers=[("Content-Type", "text/plain")], body=b"hi", call_id="c1")
    assert req.method == "MESSAGE" and req.call_id == "c1" and req.cseq.seq == 1
    assert req.from_.tag and req.to.tag is None and req.body == b"hi"
    assert req.get("content-type") == "text/plain"


@pytest.mark.parametrize("kwargs", [
    {"method": "INVITE"}, {"method": "ACK"}, {"method": "CANCEL"}, {"method": "BAD METHOD"},
    {"ruri": "not a uri"}, {"headers": [("Via", "x")]}, {"headers": [("X-A", "1\r\nX-B: 2")]},
])
def test_new_request_refuses_bad_arguments(kwargs):
    args = {"method": "MESSAGE", "ruri": "sip:a@127.0.0.1", "from_": "sip:b@h", "to": "sip:a@h"}
    args.update(kwargs)
    with pytest.raises(ValueError):
        new_request(args.pop("method"), args.pop("ruri"), args.pop("from_"), args.pop("to"),
                    **args)


def test_unanswerable_challenge_logged_once_per_realm_and_reason(caplog):
    client = UacClient(index=0, send=lambda *a: None, sent_by=lambda p: "127.0.0.1:5060",
                       resolver=None, timers=TimerValues(), creds=Credentials())
    with caplog.at_level(logging.DEBUG, logger="sipedge.modules.uac"):
        for i in range(5):
            client._warn_once("other.realm", "no credentials for realm", f"c{i}")
        client._warn_once("other.realm", "algorithm AKAv1-MD5", "c9")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "logged once" in warnings[0].getMessage()
