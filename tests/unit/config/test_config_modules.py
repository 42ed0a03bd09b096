"""[core] modules and the cross-field checks of [security], [registrar] and [auth]."""

from __future__ import annotations

import pytest

from sipedge.config import ConfigError, load_text


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "c.toml")
    return [f"{e.key}: {e.reason}" for e in info.value.errors]


def test_modules_default_to_none_and_load_with_dependencies():
    assert load_text("").core.modules == []
    c = load_text('[core]\nmodules = ["security", "registrar", "auth"]\n')
    assert c.core.modules == ["security", "registrar", "auth"]
    assert c.registrar.db_path and c.auth.algorithms == ["MD5"]


def test_unknown_duplicate_and_missing_dependency():
    out = errors('[core]\nmodules = ["auth", "securty", "auth"]\n')
    assert "core.modules[0]: module 'auth' needs 'registrar' loaded too" in out
    assert any(e.startswith("core.modules[1]: unknown module 'securty'") and "security" in e
               for e in out)
    assert "core.modules[2]: module 'auth' listed twice" in out


def test_security_networks_and_listeners_parse():
    out = errors('[security]\ntrusted = ["10.0.0.0/8", "nonsense"]\n'
                 '[[security.acl]]\nlistener = "udp:127.0.0.1:5060"\nallow = ["10.1.2.0/24"]\n'
                 'deny = ["300.1.1.1"]\n'
                 '[[security.acl]]\nlistener = "udp-127.0.0.1"\n')
    assert out == ["security.trusted[1]: expected an address or CIDR network",
                   "security.acl[0].deny[0]: expected an address or CIDR network",
                   "security.acl[1].listener: expected proto:address:port or *"]
    load_text('[[security.acl]]\nlistener = "*"\ndeny = ["2001:db8::/32"]\n'
              '[[security.acl]]\nlistener = "tls:[::1]:5061"\n')


def test_registrar_expires_order():
    assert errors("[registrar]\nmin_expires_s = 120\ndefault_expires_s = 60\n") == [
        "registrar.default_expires_s: must lie between min_expires_s (120) and max_expires_s "
        "(7200)"]
    assert errors("[registrar]\nmax_expires_s = 600\n")[0].startswith(
        "registrar.default_expires_s")
    load_text("[registrar]\nmin_expires_s = 1\ndefault_expires_s = 1\nmax_expires_s = 1\n")


def test_auth_secret_and_algorithms():
    out = errors('[auth]\nsecret = "too-short"\nalgorithms = ["SHA-256", "SHA-1"]\n')
    assert out[0] == "auth.secret: must be at least 16 characters (or empty: generated)"
    assert out[1].startswith("auth.algorithms[1]: must be one of MD5")
    assert errors("[auth]\nalgorithms = []\n") == ["auth.algorithms: name at least one algorithm"]
    load_text('[auth]\nsecret = "0123456789abcdef"\nalgorithms = ["SHA-256", "MD5"]\n')


def test_dispatcher_enum_http_client_are_loadable_modules():
    c = load_text('[core]\nmodules = ["dispatcher", "enum", "http_client"]\n'
                  '[[dispatcher.destination]]\nset = 1\nuri = "sip:10.0.0.1:5060"\nweight = 5\n')
    assert c.core.modules == ["dispatcher", "enum", "http_client"]
    assert c.dispatcher.destination[0].weight == 5
    assert c.enum.suffix == "e164.arpa." and c.http_client.verify_tls is True


def test_dispatcher_semantic_checks_name_the_path():
    out = errors('[dispatcher]\nprobe_ok_codes = ["2xx", "abc"]\nprobe_address = "eth0"\n'
                 'probe_from = "not a uri"\n'
                 '[[dispatcher.destination]]\nset = 1\nuri = "sip:10.0.0.1"\n'
                 '[[dispatcher.destination]]\nset = 1\nuri = "mailto:x@y"\n')
    assert any(e.startswith("dispatcher.probe_ok_codes: reply code pattern 'abc'") for e in out)
    assert "dispatcher.destination[1].uri: must be a sip: or sips: URI" in out
    assert "dispatcher.probe_address: expected an IP address" in out
    assert any(e.startswith("dispatcher.probe_from: not a SIP URI") for e in out)
    out = errors('[dispatcher]\nprobe_interval_s = 1\nprobe_timeout_s = 2\n'
                 '[[dispatcher.destination]]\nset = 1\nuri = "sip:10.0.0.1"\n'
                 '[[dispatcher.destination]]\nset = 1\nuri = "sip:10.0.0.1"\n')
    assert out == ["dispatcher.probe_timeout_s: probe_timeout_s must not exceed "
                   "probe_interval_s",
                   "dispatcher.destination[1].uri: duplicate of destination[0] in set 1"]


def test_enum_servers_go_through_split_server():
    out = errors('[enum]\nservers = ["127.0.0.1:5353", "ns.example", "[::1]:53"]\n'
                 'suffix = "."\nservices = []\n')
    assert out == ["enum.servers[1]: expected ip, ip:port or [ipv6]:port",
                   "enum.suffix: must name a domain (e.g. e164.arpa.)",
                   "enum.services: name at least one service"]
