"""[instances.<name>]: several proxies in one file (config/instances.py)."""

import pytest

from sipedge.config import ConfigError, load_text

TRIO = """\
[supervisor]
respawn_retry = 3

[instances.pcscf]
required = true
[instances.pcscf.core]
workers = 1
[[instances.pcscf.listen]]
port = 5060

[instances.icscf]
[[instances.icscf.listen]]
port = 5070
[[instances.icscf.listen]]
proto = "tcp"
port = 5060

[instances.scscf]
required = false
data_dir = "scscf"
[instances.scscf.core]
modules = ["registrar"]
[[instances.scscf.listen]]
address = "127.0.0.2"
port = 5060
"""


def errors(text):
    with pytest.raises(ConfigError) as exc:
        load_text(text, "box.toml")
    return [str(e) for e in exc.value.errors]


def test_single_proxy_layout_is_one_instance_named_default():
    c = load_text("[[listen]]\nport = 5070\n", "x.toml")
    assert list(c.instances) == ["default"] and c.instances["default"] is c
    assert c.instance_name == "default" and c.required
    assert c.core.ctl_socket == "/run/sipedge/ctl.sock"


def test_instances_each_a_whole_proxy_config_with_the_box_sections():
    c = load_text(TRIO, "box.toml")
    assert list(c.instances) == ["pcscf", "icscf", "scscf"]
    p, i, s = (c.instances[n] for n in ("pcscf", "icscf", "scscf"))
    assert p.core.workers == 1 and i.core.workers == 2
    assert [(lp.proto, lp.port) for lp in i.listen] == [("udp", 5070), ("tcp", 5060)]
    assert p.required and i.required and not s.required
    assert p.supervisor.respawn_retry == 3 == s.supervisor.respawn_retry
    assert c.supervisor.respawn_retry == 3
    # derived per instance
    assert p.core.ctl_socket == "/run/sipedge/pcscf/ctl.sock"
    assert s.core.ctl_socket == "/run/sipedge/scscf/ctl.sock"
    assert p.data_dir == "/data/sipedge/pcscf" and s.data_dir == "scscf"
    assert s.registrar.db_path == "scscf/location.sqlite"
    assert p.registrar.db_path == "/data/sipedge/pcscf/location.sqlite"
    assert s.instances is c.instances and s.instance_name == "scscf"


def test_errors_name_the_instance_and_the_line():
    text = TRIO.replace("[instances.icscf]\n", "[instances.icscf]\nworkerz = 3\n").replace(
        "[instances.pcscf.core]\nworkers = 1", "[instances.pcscf.core]\nworkers = 0")
    errs = errors(text)
    lines = text.splitlines()
    assert any(e.startswith("box.toml:7: instances.pcscf.core.workers: must be >= 1")
               for e in errs), errs
    assert lines[6] == "workers = 0"
    assert any("instances.icscf.workerz: unknown section" in e and e.startswith("box.toml:12:")
               for e in errs), errs


def test_same_address_port_transport_refused():
    text = TRIO.replace('address = "127.0.0.2"', 'address = "0.0.0.0"')
    errs = errors(text)
    assert len(errs) == 1, errs
    assert errs[0].startswith("box.toml:23: instances.scscf.listen[0]: udp 0.0.0.0:5060 "
                              "overlaps instance 'pcscf' (instances.pcscf.listen[0]")
    # tls shares the TCP port space with tcp; udp on the same port is fine
    ok = TRIO.replace('address = "127.0.0.2"\nport = 5060',
                      'address = "127.0.0.2"\nport = 5070\nproto = "tcp"')
    load_text(ok, "box.toml")
    bad = TRIO + '\n[[instances.scscf.listen]]\nproto = "tls"\nport = 5060\n' \
        '[instances.scscf.tls]\ncertificate = "c.pem"\nprivate_key = "k.pem"\n'
    assert any("tls 127.0.0.1:5060 overlaps instance 'icscf'" in e for e in errors(bad))


def test_shared_control_socket_or_registrar_database_refused():
    text = TRIO + '[instances.icscf.core]\nctl_socket = "/run/sipedge/pcscf/ctl.sock"\n' \
        'modules = ["registrar"]\n[instances.icscf.registrar]\ndb_path = "scscf/location.sqlite"\n'
    errs = "\n".join(errors(text))
    assert "instances.icscf.core.ctl_socket: same control socket as instance 'pcscf'" in errs
    assert "instances.scscf.registrar.db_path: same registrar database as instance 'icscf'" \
        in errs


def test_sections_in_the_wrong_place_and_bad_names():
    errs = "\n".join(errors("[core]\nworkers = 1\n" + TRIO +
                            "[instances.scscf.watchdog]\ntimeout_s = 3\n"
                            "[instances.Bad]\n"))
    assert "box.toml:1: core: [core] belongs inside each [instances.<name>] table" in errs
    assert "instances.scscf.watchdog: [watchdog] is box-wide" in errs
    assert "instances.Bad: instance name" in errs
    errs = errors("[instances.a]\nrequired = 1\n")
    assert errs == ["box.toml:2: instances.a.required: expected a boolean"]


def test_secrets_inside_instances_are_masked():
    from sipedge.config.edit import mask_secrets, secret_values

    text = TRIO + ('[instances.scscf.auth]\nsecret = "0123456789abcdef-xyz"\n'
                   '[[instances.scscf.registrar.subscriber]]\nusername = "a"\n'
                   'domain = "localhost"\nha1_md5 = "72a9683f6955bb1499059e49d101ef08"\n')
    load_text(text, "box.toml")
    assert sorted(secret_values(text)) == ["0123456789abcdef-xyz",
                                           "72a9683f6955bb1499059e49d101ef08"]
    masked = mask_secrets(text)
    assert "0123456789abcdef" not in masked and "72a9683f" not in masked
    assert 'secret = "<hidden>"' in masked


def test_check_config_checks_every_instance(tmp_path):
    from sipedge.app import config_check

    (tmp_path / "ok.py").write_text("def request_route(msg):\n    msg.reply(200, 'OK')\n")
    (tmp_path / "bad.py").write_text("def request_route(msg)\n")
    cfg = tmp_path / "box.toml"
    cfg.write_text(TRIO + '[instances.pcscf.routing]\nscript = "ok.py"\n'
                   '[instances.scscf.routing]\nscript = "bad.py"\n')
    res = config_check(str(cfg))
    assert not res["valid"] and len(res["errors"]) == 1
    assert "bad.py:1" in res["errors"][0] and "instances.scscf.routing.script" in \
        res["errors"][0]
