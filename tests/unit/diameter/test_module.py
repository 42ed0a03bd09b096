"""The diameter module's cut: L1 files import no I/O, README documents every parameter and RPC
method, the [diameter] section reports errors with file:line, the script API."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from sipedge.config import loader
from sipedge.diameter import dictionary as dd
from sipedge.errors import ConfigError

MOD = Path(__file__).parents[3] / "app" / "sipedge" / "modules" / "diameter"
IO = {"asyncio", "socket", "ssl", "os", "time", "threading", "subprocess", "selectors",
      "logging"}


@pytest.mark.parametrize("name", ["core.py", "routing.py", "params.py", "rpc.py"])
def test_l1_files_import_no_io(name):
    for node in ast.walk(ast.parse((MOD / name).read_text())):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & IO, name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert (node.module or "").split(".")[0] not in IO, name
        elif isinstance(node, ast.ImportFrom) and node.level == 3:
            assert (node.module or "").split(".")[0] not in ("io", "script", "app"), name


def test_readme_documents_every_parameter_and_rpc():
    from sipedge.modules import diameter
    from sipedge.modules.diameter import params

    readme = (MOD / "README.md").read_text()
    for heading in ("## Overview", "## Dependencies", "## Parameters", "## Script API",
                    "## RPC", "## Events"):
        assert heading in readme
    for cls in (params.DiameterParams, params.PeerParams, params.RouteParams,
                params.ListenParams, params.VendorAppParams):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in readme, f.name
    for method in diameter.MODULE.rpc:
        assert f"`{method}`" in readme


GOOD = """
[core]
modules = ["diameter"]
[diameter]
identity = "dra.example"
realm = "example"
relay = true
auth_applications = ["cx", "16777236"]
[[diameter.vendor_application]]
vendor = 10415
auth = "s6a"
[[diameter.peer]]
host = "hss.example"
address = "127.0.0.1"
[[diameter.route]]
realm = "hss.example"
peer = "hss.example"
applications = ["cx"]
"""


def test_config_builds_a_node():
    cfg = loader.load_text(GOOD, "x.toml")
    node = cfg.diameter.build_node()
    assert node.me.auth_apps == (16777216, 16777236, 0xFFFFFFFF)
    assert node.me.vendor_apps[0].auth == 16777251
    assert node.routing.routes[0].applications == frozenset({16777216})
    assert "hss.example" in node.peers and node.settings.relay


def test_config_errors_have_file_and_line():
    bad = GOOD.replace('auth_applications = ["cx", "16777236"]',
                       'auth_applications = ["cx", "nope"]').replace(
        'peer = "hss.example"\napplications', 'peer = "hss2.example"\napplications').replace(
        'address = "127.0.0.1"', 'address = "hss.example"')
    with pytest.raises(ConfigError) as exc:
        loader.load_text(bad, "x.toml")
    text = str(exc.value)
    assert "x.toml:8: diameter.auth_applications[1]: unknown application 'nope'" in text
    assert "x.toml:14: diameter.peer[0].address: expected an IP address" in text
    assert "x.toml:17: diameter.route[0].peer: no [[diameter.peer]]" in text


def test_module_loaded_needs_identity():
    with pytest.raises(ConfigError) as exc:
        loader.load_text('[core]\nmodules = ["diameter"]\n', "y.toml")
    assert "diameter.identity: required" in str(exc.value)
    loader.load_text("[diameter]\n", "z.toml")  # not loaded: fine


def test_script_api_objects():
    from sipedge.diameter.codec import Message
    from sipedge.modules.diameter.api import Answer, RelayedRequest, make_avps

    msg = Message(300, 0x80, 16777216, 1, 2, make_avps([("User-Name", "a"), ("Result-Code",
                                                                              2001)]))
    a = Answer(msg)
    assert a.result_code == 2001 and a.get("User-Name") == "a"
    r = RelayedRequest(msg, "peer.x")
    r.add_avp("Session-Priority", 1)
    r.add_avp(99999, b"raw", vendor=12)
    assert r.get("Session-Priority") == 1 and msg.avps[-1].vendor == 12
    r.reject(3002)
    assert r.reject_with == 3002 and r.command == "UAR"
    assert dd.command_code("MAR") == 303 and dd.application_id("s6a") == 16777251
