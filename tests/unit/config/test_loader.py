"""sipedge.config.loader: strict TOML validation, every error as `file:line: key: reason`."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from sipedge.config import DEFAULT_TOML, ConfigError, load_default, load_file, load_text
from sipedge.config.loader import line_map


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(textwrap.dedent(text), "c.toml")
    err = info.value
    assert str(err) == "\n".join(str(e) for e in err.errors)
    return [str(e) for e in err.errors]


def one_issue(text: str) -> str:
    found = issues(text)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------ the embedded default


def test_embedded_default_loads():
    config = load_default()
    assert [(lp.proto, lp.address, lp.port) for lp in config.listen] == [
        ("udp", "127.0.0.1", 5060), ("tcp", "127.0.0.1", 5060)]
    assert config.core.workers >= 1 and config.proxy.record_route is True
    assert config.routing.script == "examples/registrar_route.py" and config.routing.rule == []
    assert config.core.modules == ["security", "registrar", "auth"]
    assert load_text(DEFAULT_TOML) == config
    assert config.source == "<embedded default>"


def test_empty_file_gives_every_default():
    config = load_text("", "c.toml")
    assert config.listen == ()
    assert config.core == type(config.core)()
    assert set(config.sections()) >= {"core", "listen", "proxy", "routing"}


def test_sections_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_default().core.workers = 3


# ------------------------------------------------------------------ unknown keys


def test_unknown_key_with_did_you_mean():
    assert one_issue("""
        [core]
        wrokers = 2
    """) == "c.toml:3: core.wrokers: unknown key (did you mean 'workers'?)"


def test_unknown_section_with_did_you_mean():
    assert one_issue("""
        [prxy]
        record_route = true
    """) == "c.toml:2: prxy: unknown section (did you mean 'proxy'?)"


def test_unknown_key_without_a_close_match():
    assert one_issue("""
        [core]
        zzzzzz = 1
    """) == "c.toml:3: core.zzzzzz: unknown key"


def test_unknown_key_inside_an_array_element():
    assert one_issue("""
        [[listen]]
        prot = "udp"
    """) == "c.toml:3: listen[0].prot: unknown key (did you mean 'proto'?)"


# ------------------------------------------------------------------ types, limits, choices


@pytest.mark.parametrize("body, expected", [
    ("[core]\nworkers = true", "c.toml:2: core.workers: expected an integer, got a boolean"),
    ("[core]\nworkers = 2.0", "c.toml:2: core.workers: expected an integer, got a number"),
    ("[core]\nworkers = \"2\"", "c.toml:2: core.workers: expected an integer, got a string"),
    ("[proxy]\nrecord_route = 1",
     "c.toml:2: proxy.record_route: expected a boolean, got an integer"),
    ("[proxy]\nrecord_route = \"yes\"",
     "c.toml:2: proxy.record_route: expected a boolean, got a string"),
    ("[proxy]\ntcp_idle_timeout_s = false",
     "c.toml:2: proxy.tcp_idle_timeout_s: expected a number, got a boolean"),
    ("[proxy]\ndomains = \"example.com\"",
     "c.toml:2: proxy.domains: expected an array, got a string"),
    ("[proxy]\ndomains = [\"a.example\", 3]",
     "c.toml:2: proxy.domains[1]: expected a string, got an integer"),
    ("[core]\nlog_level = [\"info\"]", "c.toml:2: core.log_level: expected a string, got an array"),
    ("core = 3", "c.toml:1: core: expected a table, got an integer"),
    ("[listen]\nport = 5060", "c.toml:1: listen: expected [[listen]] tables, got a table"),
])
def test_wrong_types(body, expected):
    assert one_issue(body) == expected


def test_an_integer_is_a_valid_number():
    assert load_text("[proxy]\ntcp_idle_timeout_s = 30").proxy.tcp_idle_timeout_s == 30.0


@pytest.mark.parametrize("body, expected", [
    ("[core]\nworkers = 0", "c.toml:2: core.workers: must be >= 1"),
    ("[core]\nworkers = 65", "c.toml:2: core.workers: must be <= 64"),
    ("[proxy]\ntcp_idle_timeout_s = 0.5", "c.toml:2: proxy.tcp_idle_timeout_s: must be >= 1"),
    ("[[listen]]\nport = 0", "c.toml:2: listen[0].port: must be >= 1"),
    ("[[listen]]\nport = 65536", "c.toml:2: listen[0].port: must be <= 65535"),
])
def test_min_max(body, expected):
    assert one_issue(body) == expected


def test_limits_are_inclusive():
    config = load_text("[core]\nworkers = 64\n[[listen]]\nport = 65535\n[[listen]]\nport = 1\n")
    assert config.core.workers == 64 and [lp.port for lp in config.listen] == [65535, 1]


def test_choices():
    found = one_issue("[core]\nlog_level = \"verbose\"")
    assert found.startswith("c.toml:2: core.log_level: must be one of debug, info, warning")
    found = one_issue("[[listen]]\nproto = \"sctp\"")
    assert found.startswith("c.toml:2: listen[0].proto: must be one of udp, tcp")


# ------------------------------------------------------------------ arrays of tables and lines

LISTENERS = """\
# two listeners
[[listen]]
proto = "udp"
port = 5060

[[listen]]
proto = "tcp"
address = "::1"
port = 70000
"""


def test_first_array_element_line():
    assert one_issue(LISTENERS.replace("port = 5060", "port = 0")
                     .replace("70000", "5061")) == "c.toml:4: listen[0].port: must be >= 1"


def test_each_array_element_has_its_own_line():
    assert one_issue(LISTENERS) == "c.toml:9: listen[1].port: must be <= 65535"


def test_line_map_of_arrays_of_tables():
    lines = line_map(LISTENERS + "[routing]\n[[routing.rule]]\ndestination = \"sip:a\"\n"
                     "[[routing.rule]]\ndestination = \"sip:b\"\n")
    assert lines["listen[0]"] == 2 and lines["listen[1]"] == 6
    assert lines["listen[1].port"] == 9
    assert lines["routing.rule[0].destination"] == 12
    assert lines["routing.rule[1].destination"] == 14


def test_line_map_of_plain_tables_dotted_keys_and_multiline_values():
    text = textwrap.dedent("""\
        [proxy]
        domains = [
            "a.example",  # ] a bracket in a comment
            "b.example",
        ]
        record_route = true
        core.workers = 3
        "quoted.key" = '''
        multi
        '''
        after = 1
    """)
    lines = line_map(text)
    assert lines["proxy.domains"] == 2 and lines["proxy.record_route"] == 6
    assert lines["proxy.core.workers"] == 7 and lines["proxy.quoted.key"] == 8
    assert lines["proxy.after"] == 11


def test_error_after_a_multiline_array_has_its_line():
    assert one_issue("""
        [proxy]
        domains = [
            "a.example",
            "b.example",
        ]
        max_forwards = 0
    """) == "c.toml:7: proxy.max_forwards: must be >= 1"


def test_inline_array_of_tables_and_dotted_keys():
    found = one_issue("listen = [{port = 1}, {port = 0}]")
    assert found == "c.toml:1: listen[1].port: must be >= 1"
    assert one_issue("\ncore.workers = 0") == "c.toml:2: core.workers: must be >= 1"


# ------------------------------------------------------------------ TOML syntax errors


@pytest.mark.parametrize("body, line", [
    ("[core]\nworkers = 2\nlog_level = \n", 3),
    ("[core]\nworkers = 2\n[core]\nworkers = 3\n", 3),
    ("\n\n[[listen]\nport = 1\n", 3),
    ("[core]\nworkers = 2 3\n", 2),
])
def test_syntax_errors_have_their_line(body, line):
    found = one_issue(body)
    assert found.startswith(f"c.toml:{line}: (syntax): "), found
    assert "(at line" not in found


def test_syntax_error_at_end_of_document_names_the_last_line():
    found = one_issue("[core]\n\n\nworkers = [1,\n")
    assert found.startswith("c.toml:4: (syntax): ") and "end of document" not in found


# ------------------------------------------------------------------ [[routing.rule]]


def test_route_rules():
    config = load_text(textwrap.dedent("""
        [routing]
        default_destination = "sip:core.example.com"
        [[routing.rule]]
        domain = "example.org"
        destination = "sip:gw1.example.org:5070;transport=tcp"
        [[routing.rule]]
        user_prefix = "+49"
        destination = "sip:[2001:db8::5]"
    """))
    assert [(r.domain, r.user_prefix, r.destination) for r in config.routing.rule] == [
        ("example.org", "", "sip:gw1.example.org:5070;transport=tcp"),
        ("", "+49", "sip:[2001:db8::5]")]


def test_route_rule_destination_is_required():
    assert one_issue("""
        [[routing.rule]]
        domain = "example.org"
    """) == "c.toml:2: routing.rule[0].destination: required key is missing"


def test_route_rule_destination_must_be_a_uri():
    assert one_issue("""
        [[routing.rule]]
        destination = "sip:"
    """) == "c.toml:3: routing.rule[0].destination: not a SIP URI: Bad URI host"


# ------------------------------------------------------------------ every error, not the first


def test_every_error_is_collected():
    found = issues("""
        [core]
        workers = 0
        log_level = "loud"
        wrokers = 2
        [proxy]
        record_route = "yes"
        [[listen]]
        port = 0
        [[routing.rule]]
        domain = "x"
        [nope]
    """)
    assert found == [
        "c.toml:3: core.workers: must be >= 1",
        f"c.toml:4: core.log_level: {found[1].split(': ', 2)[2]}",
        "c.toml:5: core.wrokers: unknown key (did you mean 'workers'?)",
        "c.toml:7: proxy.record_route: expected a boolean, got a string",
        "c.toml:9: listen[0].port: must be >= 1",
        "c.toml:10: routing.rule[0].destination: required key is missing",
        "c.toml:12: nope: unknown section",
    ]
    assert "must be one of" in found[1]


def test_every_semantic_error_is_collected():
    found = issues("""
        [[listen]]
        port = 5060
        advertise = "a:b:c"
        [[listen]]
        port = 5060
        [routing]
        default_destination = "sip:@"
    """)
    assert any(f.endswith("listen[0].advertise: expected host[:port]") for f in found)
    assert any(f.endswith("listen[1]: duplicate listener") for f in found)
    assert any(f.startswith("c.toml:8: routing.default_destination: not a SIP URI")
               for f in found)


# ------------------------------------------------------------------ files


def test_load_file(tmp_path):
    path = tmp_path / "sipedge.toml"
    path.write_text("[core]\nworkers = 3\n", encoding="utf-8")
    config = load_file(path)
    assert config.core.workers == 3 and config.source == str(path)
    path.write_text("[core]\nworkers = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == f"{path}:2: core.workers: must be >= 1"


@pytest.mark.parametrize("content", [None, b"\xff\xfe[core]\n"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "sipedge.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    (issue,) = info.value.errors
    assert issue.file == str(path) and issue.key == "(file)"


# ------------------------------------------------------------------ odd digits never crash


@pytest.mark.parametrize("server", [
    "192.0.2.1:5²",
    pytest.param("192.0.2.1:" + "1" * 5000, id="5000-digits"),
    "192.0.2.1:0", "192.0.2.1:x", "[2001:db8::1]53",
])
def test_bad_dns_server_port_is_a_config_error(server):
    found = one_issue(f'[dns]\nservers = ["{server}"]')
    assert found == "c.toml:2: dns.servers[0]: expected ip, ip:port or [ipv6]:port"
