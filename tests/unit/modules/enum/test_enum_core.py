"""ENUM sans-IO: numbers, domains, NAPTR regexps and services, and the resolution workflow
fed with dnspython NAPTR rdata."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from sipedge.modules.enum import (DnsFailure, EnumNumberError, EnumResolution, Found, NotFound,
                                  enum_domain, normalize_number)
from sipedge.modules.enum.core import RegexpError, parse_regexp, service_matches
from sipedge.resolve import Answer, DnsCache

SEED = "+61355500912"
SEED_DOMAIN = "2.1.9.0.0.5.5.5.3.1.6.e164.arpa."


def naptr(text: str):
    """NAPTR rdata from presentation text whose backslashes are data (zone files need them
    doubled: `\\1` in a zone file is the back-reference `\1`)."""
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NAPTR, text.replace("\\", "\\\\"))


# ------------------------------------------------------------------ numbers and domains

@pytest.mark.parametrize("number", ["+61355500912", "61355500912", "+61 3 5550 0912",
                                    "+61-(3)-5550.0912"])
def test_domain_with_or_without_plus_and_separators(number):
    assert enum_domain(number) == SEED_DOMAIN
    assert normalize_number(number) == SEED


def test_reject_mode_and_limits():
    assert normalize_number("+61355500912", "reject") == SEED
    with pytest.raises(EnumNumberError):
        normalize_number("+61 3 5550 0912", "reject")
    with pytest.raises(EnumNumberError):
        normalize_number("alice")
    with pytest.raises(EnumNumberError):
        normalize_number("+1234567890123456")  # 16 digits
    with pytest.raises(EnumNumberError):
        normalize_number("+٦١٣", "reject")  # non-ASCII digits are not digits here
    assert enum_domain("+4930", "e164.example.net") == "0.3.9.4.e164.example.net."


# ------------------------------------------------------------------ regexp field

@pytest.mark.parametrize("field,aus,out", [
    ("!^.*$!sip:info@example.com!", SEED, "sip:info@example.com"),
    ("!^\\+(.*)$!sip:\\1@example.com!", SEED, "sip:61355500912@example.com"),
    ("!^\\+61(3)(.*)$!sip:0\\1\\2@au.example;user=phone!", SEED, "sip:0355500912@au.example;user=phone"),
    ("/^\\+([0-9]{2})([0-9]+)$/sip:\\2@cc\\1.example/", SEED, "sip:355500912@cc61.example"),
    ("#^\\+61#sip:x@y#", SEED, "sip:x@y355500912"),  # only the match is replaced
    ("!^\\+61(.*)$!sip:\\\\\\1@e!", SEED, "sip:\\355500912@e"),  # \\ is a backslash
    ("|^\\+61(.*)$|sip:a\\|b@\\1|", SEED, "sip:a|b@355500912"),  # escaped delimiter
])
def test_regexp_substitution(field, aus, out):
    assert parse_regexp(field).apply(aus) == out


def test_regexp_i_flag_and_no_match():
    assert parse_regexp("!^ABC$!x!i").apply("abc") == "x"
    assert parse_regexp("!^ABC$!x!").apply("abc") is None


@pytest.mark.parametrize("field", ["", "!^a!b", "!a!b!c!d", "!a!b!g", "!(?i)a!b!", "!a(!b!",
                                   "1a1b1", "!" + "a" * 600 + "!b!"])
def test_bad_regexp_fields(field):
    with pytest.raises(RegexpError):
        parse_regexp(field)


def test_backreference_without_group():
    with pytest.raises(RegexpError):
        parse_regexp("!^.*$!sip:\\3@x!").apply(SEED)


@pytest.mark.parametrize("service,ok", [("E2U+sip", True), ("e2u+SIP", True), ("SIP+E2U", True),
                                        ("E2U+voice:tel+sip", True), ("E2U+email:mailto", False),
                                        ("E2U+voice:sip", False), ("SIP+D2U", False), ("", False)])
def test_service_matching(service, ok):
    assert service_matches(service, ("e2u+sip", "sip+e2u")) is ok


# ------------------------------------------------------------------ resolution

def drive(res: EnumResolution, zone: dict[str, list | None], now: float = 0.0):
    """Answer queries from `zone`: name -> NAPTR text list (None: the query fails)."""
    asked = []
    while (q := res.next_query(now)) is not None:
        asked.append(q.name)
        records = zone.get(q.name, [])
        res.feed(None if records is None else Answer(tuple(naptr(r) for r in records), 300),
                 now)
    return res.result, asked


def test_seed_number_maps_to_sip_server():
    zone = {SEED_DOMAIN.rstrip("."): ['100 10 "u" "E2U+sip" "!^.*$!sip:info@sip.example.com!" .']}
    result, asked = drive(EnumResolution(SEED), zone)
    assert result == Found("sip:info@sip.example.com", SEED, SEED_DOMAIN, 100, 10,
                           "E2U+sip")
    assert asked == [SEED_DOMAIN.rstrip(".")]
    assert result


def test_order_then_preference_and_service_filter():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: [
        '20 10 "u" "E2U+sip" "!^.*$!sip:order20@x!" .',
        '10 50 "u" "E2U+sip" "!^.*$!sip:o10p50@x!" .',
        '10 20 "u" "E2U+email:mailto" "!^.*$!mailto:a@x!" .',  # better, wrong service
        '10 30 "u" "E2U+sip" "!^.*$!sip:o10p30@x!" .',
    ]}
    assert drive(EnumResolution(SEED), zone)[0].uri == "sip:o10p30@x"


def test_old_service_form_and_bad_record_skipped():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: ['10 10 "u" "E2U+sip" "!^.*$!http://x/!" .',   # not a SIP URI
                '10 20 "u" "E2U+sip" "!^\\+99(.*)$!sip:\\1@x!" .',  # no match
                '10 30 "u" "SIP+E2U" "!^\\+(.*)$!sip:\\1@old.example!" .']}
    assert drive(EnumResolution(SEED), zone)[0].uri == "sip:61355500912@old.example"


def test_non_terminal_follows_replacement_then_regexp():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: ['10 10 "" "" "" next.example.net.'],
            "next.example.net": ['10 10 "" "E2U+sip" "!^\\+61(.*)$!b.example.net!" .'],
            "b.example.net": ['10 10 "u" "E2U+sip" "!^\\+(.*)$!sip:\\1@final.example!" .']}
    result, asked = drive(EnumResolution(SEED), zone)
    assert result.uri == "sip:61355500912@final.example" and result.domain == "b.example.net."
    assert asked == [d, "next.example.net", "b.example.net"]


def test_non_terminal_that_finds_nothing_falls_back_to_next_record():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: ['10 10 "" "" "" empty.example.',
                '20 10 "u" "E2U+sip" "!^.*$!sip:fallback@x!" .']}
    assert drive(EnumResolution(SEED), zone)[0].uri == "sip:fallback@x"


def test_depth_limit_and_loops_are_bounded():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: ['10 10 "" "" "" a.example.'], "a.example": ['10 10 "" "" "" b.example.'],
            "b.example": ['10 10 "" "" "" a.example.']}  # loop
    result, asked = drive(EnumResolution(SEED), zone)
    assert result == NotFound("no record for the service", SEED)
    assert asked == [d, "a.example", "b.example"]
    chain = {d: ['10 10 "" "" "" l1.example.']}
    for i in range(1, 10):
        chain[f"l{i}.example"] = [f'10 10 "" "" "" l{i + 1}.example.']
    result, asked = drive(EnumResolution(SEED, max_depth=3), chain)
    assert result == NotFound("depth limit", SEED) and len(asked) == 4


def test_nxdomain_wrong_service_and_failure():
    d = SEED_DOMAIN.rstrip(".")
    assert drive(EnumResolution(SEED), {})[0] == NotFound("no such number", SEED)
    wrong = {d: ['10 10 "u" "E2U+email:mailto" "!^.*$!mailto:a@x!" .']}
    assert drive(EnumResolution(SEED), wrong)[0] == NotFound("no record for the service", SEED)
    failed = drive(EnumResolution(SEED), {d: None})[0]
    assert isinstance(failed, DnsFailure) and not failed and failed.name == d
    nomatch = {d: ['10 10 "u" "E2U+sip" "!^\\+1(.*)$!sip:\\1@x!" .']}
    assert drive(EnumResolution(SEED), nomatch)[0].reason == "no regexp matched"


def test_cache_answers_repeat_lookups():
    cache = DnsCache()
    zone = {SEED_DOMAIN.rstrip("."): ['10 10 "u" "E2U+sip" "!^.*$!sip:c@x!" .']}
    assert drive(EnumResolution(SEED, cache=cache), zone, now=1.0)[1] == [SEED_DOMAIN.rstrip(".")]
    result, asked = drive(EnumResolution(SEED, cache=cache), zone, now=2.0)
    assert asked == [] and result.uri == "sip:c@x"


def test_feed_without_query_is_an_error():
    res = EnumResolution(SEED)
    with pytest.raises(ValueError):
        res.feed(Answer(()))


@pytest.mark.parametrize("field", ["!" + "(1*)*" * 5 + "x!y!", "!^(\\+?1*)*$!x!",
                                   "!^(1|11)*$!x!", "!(1)\\1!x!", "!" + "1*" * 7 + "x!y!"])
def test_regexps_that_could_backtrack_for_long_are_refused(field):
    """A regexp comes from whoever controls a zone: no nested quantifiers, no alternation
    under a quantifier, no back-references in the pattern, at most 6 quantifiers."""
    with pytest.raises(RegexpError):
        parse_regexp(field)


def test_worst_accepted_regexp_is_fast():
    import time

    expr = parse_regexp("!" + "[0-9]*" * 6 + "x!y!")
    t0 = time.perf_counter()
    assert expr.apply("+" + "1" * 15) is None
    assert time.perf_counter() - t0 < 0.5


def test_hostile_record_is_skipped_not_fatal():
    d = SEED_DOMAIN.rstrip(".")
    zone = {d: ['10 10 "u" "E2U+sip" "!^(\\+?[0-9]*)*$!sip:x@y!" .',
                '20 10 "u" "E2U+sip" "!^.*$!sip:ok@y!" .']}
    assert drive(EnumResolution(SEED), zone)[0].uri == "sip:ok@y"
