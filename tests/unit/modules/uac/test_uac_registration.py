"""Outbound registration state machine (modules/uac/registration.py): `now` is a number."""

from __future__ import annotations

import pytest

from sipedge.errors import LocalProtocolError
from sipedge.modules.uac.registration import (
    RegRow,
    RegState,
    RegTiming,
    Registration,
    granted_expires,
    parse_list_file,
)

ROW = RegRow("t1", "box1", "carrier.test", password="pw", expires=60)
TIMING = RegTiming(refresh_ratio=0.8, retry_min_s=5, retry_max_s=40, forbidden_retry_s=900)


def started(now=0.0) -> Registration:
    reg = Registration(ROW, TIMING, now)
    todo = reg.due(now)
    assert todo is not None and todo.expires == 60 and todo.cseq == 1
    assert reg.state is RegState.REGISTERING and reg.get_timer() is None
    return reg


def test_register_and_refresh_before_expiry():
    reg = started()
    assert reg.on_reply(200, 60, None, 1.0) is None
    assert reg.state is RegState.REGISTERED and reg.get_timer() == pytest.approx(49.0)
    assert reg.due(40.0) is None  # not yet
    again = reg.due(49.0)
    assert again is not None and again.cseq == 2  # same Call-ID, CSeq up (10.2.4)
    reg.sent(3)  # the glue answered a challenge with CSeq 3
    reg.on_reply(200, 30, None, 50.0)  # the registrar may shorten it
    assert reg.get_timer() == pytest.approx(74.0)
    assert reg.due(74.0).cseq == 4


def test_423_retries_with_min_expires_once():
    reg = started()
    again = reg.on_reply(423, None, 120, 1.0)
    assert again is not None and again.expires == 120 and reg.state is RegState.REGISTERING
    # a 423 without a usable Min-Expires (missing, or not above what we asked) is a failure
    assert reg.on_reply(423, None, 120, 2.0) is None
    assert reg.state is RegState.FAILED and "Min-Expires" in reg.last_error


def test_failures_back_off_exponentially_and_forbidden_waits_long():
    reg = started()
    delays = []
    now = 0.0
    for _ in range(5):
        reg.on_reply(500, None, None, now)
        delays.append(reg.get_timer() - now)
        now = reg.get_timer()
        assert reg.due(now) is not None
    assert delays == [5, 10, 20, 40, 40]
    reg.on_reply(403, None, None, now)
    assert reg.get_timer() - now == 900 and reg.last_error.startswith("403")
    now = reg.get_timer()
    reg.due(now)
    reg.on_reply(401, None, None, now)  # our answer was refused: a wrong password
    assert reg.get_timer() - now == 900 and "credentials refused" in reg.last_error
    now = reg.get_timer()
    reg.due(now)
    reg.on_failed("408 Request Timeout (local)", now)  # no answer at all
    assert reg.state is RegState.FAILED and reg.get_timer() > now


def test_garbage_2xx_counts_as_failure_not_a_loop():
    reg = started()
    reg.on_reply(200, 0, None, 1.0)  # our contact granted 0 s: not registered
    assert reg.state is RegState.FAILED and reg.get_timer() == pytest.approx(6.0)


def test_disable_unregisters_enable_and_refresh():
    reg = started()
    reg.on_reply(200, 60, None, 1.0)
    reg.disable(2.0)
    assert reg.state is RegState.DISABLED
    bye = reg.due(2.0)
    assert bye is not None and bye.expires == 0
    assert reg.due(3.0) is None and reg.get_timer() is None
    reg.enable(4.0)
    assert reg.due(4.0).expires == 60
    reg.on_reply(200, 60, None, 4.5)
    reg.refresh(5.0)
    assert reg.due(5.0) is not None


def test_disabled_row_waits_for_enable_and_status_has_no_secret():
    reg = Registration(RegRow("t2", "u", "d", password="secret-pw", flags=1), TIMING, 0.0)
    assert reg.state is RegState.DISABLED and reg.due(0.0) is None
    assert "secret-pw" not in repr(reg.status(0.0)) and "secret-pw" not in repr(reg.row)


def test_illegal_transition_is_a_local_error():
    reg = started()
    reg.state = RegState.WAITING
    with pytest.raises(LocalProtocolError):
        reg._go(reg_input_ok(), 0.0)


def reg_input_ok():
    from sipedge.modules.uac.registration import RegInput

    return RegInput.OK


def test_granted_expires_from_contact_or_header():
    contacts = ['<sip:other@10.0.0.1>;expires=99', '<sip:t1@127.0.0.1:5060>;expires=120']
    assert granted_expires(contacts, "3600", "t1") == 120
    assert granted_expires([], "300", "t1") == 300
    assert granted_expires(['<sip:t1@h>;expires=abc'], None, "t1") is None
    assert granted_expires([], "soon", "t1") is None


def test_list_file_rows_and_errors():
    text = """# id user domain auth_user password proxy expires flags
t1 box1 carrier.test - pw sip:127.0.0.1:5070 600 0
t2 box2 carrier.test authuser pw2
t1 dup carrier.test
bad
t3 u d - - - 5 0
"""
    rows, errors = parse_list_file(text, "reg.list")
    assert [r.id for r in rows] == ["t1", "t2"]
    assert rows[0].proxy == "sip:127.0.0.1:5070" and rows[0].expires == 600
    assert rows[1].auth_username == "authuser" and rows[1].expires == 3600
    assert errors == ["reg.list:4: id 't1' given twice",
                      "reg.list:5: want 3 to 8 columns, got 1",
                      "reg.list:6: expires must be 10..604800 and flags 0 or 1"]


def test_config_checks_trunks_and_registrations():
    from sipedge.config import ConfigError, load_text

    ok = load_text('[core]\nmodules = ["uac"]\n[[uac.trunk]]\nname = "c"\nrealm = "r"\n'
                   'username = "u"\npassword = "p"\n[[uac.registration]]\nid = "r1"\n'
                   'username = "u"\ndomain = "carrier.test"\ntrunk = "c"\n', "t.toml")
    assert ok.uac.registration[0].trunk == "c"
    bad = ('[core]\nmodules = ["uac"]\n[[uac.trunk]]\nname = "c"\nrealm = "r"\n'
           'username = "u"\nha1 = "xyz"\n[[uac.registration]]\nid = "r 1"\nusername = "u"\n'
           'domain = "carrier.test"\ntrunk = "nope"\nproxy = "not a uri"\n')
    with pytest.raises(ConfigError) as err:
        load_text(bad, "t.toml")
    text = str(err.value)
    for path in ("uac.trunk[0].ha1", "uac.registration[0].id", "uac.registration[0].trunk",
                 "uac.registration[0].proxy"):
        assert path in text, text
