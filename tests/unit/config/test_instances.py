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


DIA = """\
[instances.hss]
[instances.hss.core]
modules = ["diameter"]
[[instances.hss.listen]]
port = 5090
[instances.hss.diameter]
identity = "hss.example.net"
realm = "example.net"
[[instances.hss.diameter.listen]]
port = 3868

[instances.dra]
[instances.dra.core]
modules = ["diameter"]
[[instances.dra.listen]]
port = 5091
[instances.dra.diameter]
identity = "dra.example.net"
realm = "example.net"
[[instances.dra.diameter.listen]]
address = "0.0.0.0"
port = 3868
"""


def _line(text, needle, nth=1):
    lines = text.splitlines()
    idx = [i for i, ln in enumerate(lines) if ln == needle]
    return idx[nth - 1] + 1


def test_diameter_listeners_compared_across_instances():
    errs = errors(DIA)
    first = _line(DIA, "[[instances.hss.diameter.listen]]")
    second = _line(DIA, "[[instances.dra.diameter.listen]]")
    assert errs == [f"box.toml:{second}: instances.dra.diameter.listen[0]: tcp 0.0.0.0:3868 "
                    f"overlaps instance 'hss' (instances.hss.diameter.listen[0] at "
                    f"box.toml:{first}: tcp 127.0.0.1:3868)"], errs
    # SCTP is its own port space; port 0 (any free port) clashes with nothing
    load_text(DIA.replace('address = "0.0.0.0"\n', 'address = "0.0.0.0"\ntransport = "sctp"\n'),
              "box.toml")
    load_text(DIA.replace('address = "0.0.0.0"\nport = 3868', 'port = 0'), "box.toml")
    # a Diameter TCP port is a TCP port: another instance's SIP tcp/tls listener on it clashes
    sip = DIA.replace('address = "0.0.0.0"\nport = 3868', 'port = 3869') + \
        '[[instances.hss.listen]]\nproto = "tcp"\nport = 3869\n'
    assert any("instances.dra.diameter.listen[0]: tcp 127.0.0.1:3869 overlaps instance 'hss' "
               "(instances.hss.listen[1] at box.toml:" in e for e in errors(sip)), errors(sip)
    # a [diameter] section of an instance that does not load the module binds nothing
    load_text(DIA.replace('[instances.dra.core]\nmodules = ["diameter"]\n', ""), "box.toml")


PCSCF = """\
[instances.{n}]
[instances.{n}.core]
workers = 1
modules = ["ims_pcscf"]
[[instances.{n}.listen]]
address = "{a}"
port = {sip}
[instances.{n}.ims_pcscf]
address = "{a}"
port_base = {base}
slots = 8
"""


def test_ims_pcscf_protected_ports_and_xfrm_ranges_compared_across_instances():
    one = PCSCF.format(n="pa", a="127.0.0.1", sip=5060, base=5100)
    # the protected ports (5100-5115, UDP and TCP) cover another instance's SIP port
    text = one + PCSCF.format(n="pb", a="127.0.0.1", sip=5110, base=6100) + \
        "reqid_base = 0x5f0000\nspi_min = 200000\nspi_max = 300000\n"
    errs = errors(text)
    assert len(errs) == 1 and errs[0].startswith(
        f"box.toml:{_line(text, '[[instances.pb.listen]]')}: instances.pb.listen[0]: udp 127.0.0.1:5110 "
        "overlaps instance 'pa' (instances.pa.ims_pcscf.port_base at "
        f"box.toml:{_line(text, 'port_base = 5100')}: udp 127.0.0.1:5100-5115)"), errs
    # two P-CSCFs: ranges overlap on one address, and the default reqid and SPI ranges clash
    text = one + PCSCF.format(n="pb", a="127.0.0.1", sip=5070, base=5114)
    errs = "\n".join(errors(text))
    assert "instances.pb.ims_pcscf.port_base: udp 127.0.0.1:5114-5129 overlaps instance 'pa'" \
        in errs
    assert "instances.pb.ims_pcscf.reqid_base: reqids 0x5e0000-0x5e0007 overlap instance " \
        "'pa'" in errs
    assert "instances.pb.ims_pcscf.spi_min: SPIs 65536-131071 overlap instance 'pa'" in errs
    # on another address only the kernel-wide reqid range still has to differ
    text = one + PCSCF.format(n="pb", a="127.0.0.2", sip=5060, base=5100)
    assert [e.split(": ", 2)[1] for e in errors(text)] == ["instances.pb.ims_pcscf.reqid_base"]
    load_text(text + "reqid_base = 0x5f0000\n", "box.toml")


def test_sipedgectl_instance_is_optional_when_the_file_has_one(tmp_path):
    """`sipedgectl -c FILE` finds an instance's control socket in the file: -i may be left
    out when there is one instance (named or `default`), and is asked for when there are
    several."""
    from sipedge.cli import _instance_socket

    one = tmp_path / "one.toml"
    one.write_text('[instances.solo]\n[instances.solo.core]\nctl_socket = "/tmp/solo.sock"\n'
                   '[[instances.solo.listen]]\nport = 5060\n')
    assert _instance_socket(str(one), None) == "/tmp/solo.sock"
    assert _instance_socket(str(one), "solo") == "/tmp/solo.sock"
    plain = tmp_path / "plain.toml"
    plain.write_text("[[listen]]\nport = 5060\n")
    assert _instance_socket(str(plain), None) == "/run/sipedge/ctl.sock"
    trio = tmp_path / "trio.toml"
    trio.write_text(TRIO)
    assert _instance_socket(str(trio), "icscf") == "/run/sipedge/icscf/ctl.sock"
    with pytest.raises(SystemExit) as exc:
        _instance_socket(str(trio), None)
    assert "several instances (pcscf, icscf, scscf): choose one with -i NAME" in str(exc.value)
    with pytest.raises(SystemExit) as exc:
        _instance_socket(str(trio), "nosuch")
    assert "no instance 'nosuch'" in str(exc.value)
