"""Style-preserving TOML editing (tomlkit) and schema-driven secret hiding (config/edit.py)."""

import pytest
import tomllib

from sipedge.config.edit import (HIDDEN, EditError, mask_secrets, parse_key, parse_value,
                                 secret_keys, secret_values, set_value)

FILE = """\
# my box: comments, order and layout must survive every edit
[core]
workers = 2  # two
modules = [
    "security",  # screening first
    "registrar",
    "auth",
]
tls.min_version = "1.2"
limits = {max_message_bytes = 65535, x = 1}

[[listen]]
proto = "udp"   # the UDP one
address = "0.0.0.0"
port = 5060

[[listen]]
proto = "tcp"
address = "0.0.0.0"
port = 5060

[auth]
secret = "0123456789abcdefXYZ"  # keep it

[[network.interface]]
name = "eth0"
addresses = ["192.0.2.10/24"]
"""


def unchanged_except(old, new, *lines):
    """`new` differs from `old` only by replacing the named lines (comments included)."""
    import difflib

    diff = [d for d in difflib.ndiff(old.splitlines(), new.splitlines()) if d[:1] == "-"]
    assert diff == ["- " + ln for ln in lines], diff
    assert len(old.splitlines()) == len(new.splitlines())


def test_parse_key_forms():
    assert parse_key("core.workers") == ["core", "workers"]
    assert parse_key("listen[0].port") == ["listen", 0, "port"]
    assert parse_key("listen.1.port") == ["listen", 1, "port"]
    assert parse_key("network.interface[0].addresses") == ["network", "interface", 0, "addresses"]
    assert parse_key('x."a.b".c') == ["x", "a.b", "c"]
    for bad in ("workers", "listen[0]", "a..b", "a.b[", "a.b c", ""):
        with pytest.raises(EditError):
            parse_key(bad)


def test_array_of_tables_entry():
    new = set_value(FILE, "listen[0].port", "5070")
    unchanged_except(FILE, new, "port = 5060")
    assert tomllib.loads(new)["listen"][0]["port"] == 5070
    assert tomllib.loads(new)["listen"][1]["port"] == 5060
    assert 'proto = "udp"   # the UDP one' in new
    assert tomllib.loads(set_value(FILE, "listen.1.port", "5071"))["listen"][1]["port"] == 5071
    with pytest.raises(EditError, match="has 2 entries"):
        set_value(FILE, "listen[2].port", "1")
    with pytest.raises(EditError, match="not a table"):
        set_value(FILE, "listen.port", "5070")  # the first try: a clear error


def test_quoting_and_arrays_as_written():
    assert tomllib.loads(set_value(FILE, "core.server_header", '"123"'))["core"][
        "server_header"] == "123"
    assert tomllib.loads(set_value(FILE, "core.workers", "3"))["core"]["workers"] == 3
    assert tomllib.loads(set_value(FILE, "core.server_header", "my edge"))["core"][
        "server_header"] == "my edge"
    new = set_value(FILE, "proxy.domains", '["a.example", "b.example"]')
    assert 'domains = ["a.example", "b.example"]' in new
    assert tomllib.loads(new)["proxy"]["domains"] == ["a.example", "b.example"]
    assert parse_value("/dev/ttyS1") == "/dev/ttyS1"
    assert parse_value("'lit'") == "lit"


def test_nested_forms_keep_comments():
    new = set_value(FILE, "core.workers", "4")
    assert "workers = 4  # two" in new  # the inline comment of the edited line survives
    unchanged_except(FILE, new, "workers = 2  # two")
    new = set_value(FILE, "core.tls.min_version", '"1.3"')  # dotted key
    assert 'tls.min_version = "1.3"' in new
    new = set_value(FILE, "core.limits.x", "2")  # inline table
    assert "limits = {max_message_bytes = 65535, x = 2}" in new
    new = set_value(FILE, "network.interface[0].mtu", "1400")  # nested array of tables
    assert tomllib.loads(new)["network"]["interface"][0]["mtu"] == 1400
    new = set_value(FILE, "core.modules", '["security", "registrar", "auth", "enum"]')
    assert '"security",  # screening first' not in new and "enum" in new
    new = set_value(FILE, "auth.algorithms", '["MD5"]')
    assert 'secret = "0123456789abcdefXYZ"  # keep it' in new
    new = set_value(FILE, "management.console_device", "/dev/ttyS1")  # new table at the end
    assert new.startswith(FILE) and tomllib.loads(new)["management"]["console_device"] == \
        "/dev/ttyS1"


def test_invalid_toml_is_a_clear_error():
    with pytest.raises(EditError, match="not valid TOML"):
        set_value("[core\nworkers = 1\n", "core.workers", "2")


def test_secrets_come_from_the_schema():
    keys = secret_keys()
    assert {"auth.secret", "management.password_hash", "tls.private_key"} <= set(keys)
    masked = mask_secrets(FILE + '\n[management]\npassword_hash = "pbkdf2_sha256$1$a$b"\n')
    assert "0123456789abcdefXYZ" not in masked and "pbkdf2_sha256$1$a$b" not in masked
    assert f'secret = "{HIDDEN}"  # keep it' in masked
    assert secret_values(FILE) == ["0123456789abcdefXYZ"]
    # not even a file that is not TOML shows a secret
    broken = '[auth\nsecret = "0123456789abcdefXYZ"\npassword_hash="abc"\n'
    assert "0123456789abcdefXYZ" not in mask_secrets(broken)
    assert "abc" not in mask_secrets(broken)
