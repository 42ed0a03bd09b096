"""Capability probe on a kernel without ESP (this host's): reported clearly, and with
on_no_esp = "refuse" a REGISTER gets 503, never a half-installed set. Runs in a fresh netns
(`unshare -n`) so the host's XFRM tables are not touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytestmark = [pytest.mark.needs_root]


def test_no_esp_refuse(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    probe = subprocess.run(["unshare", "-n", "ip", "xfrm", "state", "add", "src", "127.0.0.1",
                            "dst", "127.0.0.1", "proto", "esp", "spi", "0x999", "mode",
                            "transport", "enc", "cbc(aes)", "0x" + "00" * 16],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("this kernel has ESP; the UML tests cover it")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE.parents[2] / "app"), str(HERE), str(HERE.parent)]))
    r = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "payload_noesp.py"),
                        str(tmp_path / "result.json")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["reply"].startswith("SIP/2.0 503 Service Unavailable\r\n")
    # on_no_esp = "disable": Proxy-Require: sec-agree -> 420 naming the tag (RFC 3261 16.3)
    assert out["disabled_reply"].startswith("SIP/2.0 420 Bad Extension\r\n")
    assert "\r\nUnsupported: sec-agree\r\n" in out["disabled_reply"], out["disabled_reply"]
    assert out["rc2"] == 0
    # sec-agree off, the S-CSCF's 401 still loses ck/ik on its way to the UE
    head = out["disabled_401"].split("\r\n\r\n")[0].split("\r\n")
    assert head[0] == "SIP/2.0 401 Unauthorized", head
    (www,) = [h for h in head if h.lower().startswith("www-authenticate:")]
    assert 'nonce="' in www and "ck=" not in www.lower() and "ik=" not in www.lower(), www
    assert not any(h.lower().startswith("security-server:") for h in head), head
    assert out["list"]["enabled"] is False and out["list"]["sets"] == []
    probe = out["crypto"]["probe"]
    assert probe and all(v != "ok" for v in probe.values()), probe
    assert any(v.startswith("no ESP in the kernel") for v in probe.values()), probe
    assert "no usable ESP suite" in out["log"] and "REGISTERs get 503" in out["log"]
    assert out["rc"] == 0
