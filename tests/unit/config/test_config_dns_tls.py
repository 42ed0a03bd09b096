"""[dns] and [tls] sections: defaults, and every semantic error reported with its key."""

import pytest

from sipedge.config import ConfigError, load_text
from sipedge.config.loader import split_server


def test_defaults():
    c = load_text("")
    assert c.dns.servers == [] and c.dns.resolv_conf == "/etc/resolv.conf"
    assert c.dns.naptr and c.dns.srv_transports == ["udp", "tcp", "tls"]
    assert c.tls.min_version == "1.2" and c.tls.verify_server and not c.tls.require_certificate


def test_tls_listener_and_servers():
    c = load_text('[dns]\nservers = ["127.0.0.1", "127.0.0.2:5353", "[::1]:53"]\n'
                  '[tls]\ncertificate = "/c.pem"\nprivate_key = "/k.pem"\n'
                  '[[listen]]\nproto = "tls"\nport = 5061\n')
    assert c.listen[0].proto == "tls"
    assert [split_server(s) for s in c.dns.servers] == [("127.0.0.1", 53), ("127.0.0.2", 5353),
                                                        ("::1", 53)]


@pytest.mark.parametrize("text", ["host.example", "1.2.3.4:0", "1.2.3.4:x", "[::1", "::1]:5"])
def test_bad_server(text):
    assert split_server(text) is None


def test_all_errors_reported_by_key():
    with pytest.raises(ConfigError) as e:
        load_text('[dns]\nservers = ["ns.example"]\nsrv_transports = ["sctp"]\n'
                  '[tls]\nrequire_certificate = true\nmin_version = "1.1"\n'
                  '[[listen]]\nproto = "tls"\n')
    keys = [i.key for i in e.value.errors]
    assert keys == ["tls.min_version"]  # type/choice errors first, then the semantic ones
    with pytest.raises(ConfigError) as e:
        load_text('[dns]\nservers = ["ns.example"]\nsrv_transports = ["sctp"]\n'
                  '[tls]\nrequire_certificate = true\n[[listen]]\nproto = "tls"\n')
    assert [i.key for i in e.value.errors] == ["dns.servers[0]", "dns.srv_transports[0]",
                                               "tls.certificate", "tls.ca_bundle"]
