"""Diameter over SCTP (RFC 6733 2.1): the host kernel has no SCTP, so one user-mode-linux boot
(Debian user-mode-linux ships sctp.ko) runs payload_diameter_sctp.py: a freeDiameter client
and a freeDiameter server (fdpeer extension, SCTP only: No_TCP) around our relay, all on
127.0.0.1 inside UML. About 15 s."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from diameter_harness import build_fdpeer, needs_freediameter

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "ims"))
import uml  # noqa: E402

pytestmark = [needs_freediameter, pytest.mark.needs_root, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    why = uml.available()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("uml-sctp")
    ext = build_fdpeer(work)
    if ext is None:
        pytest.skip("cc or freeDiameter headers (Debian libfreediameter-dev) missing")
    return uml.run(HERE / "payload_diameter_sctp.py", work, args=[str(ext), str(work)],
                   timeout=240, kmods="sctp dummy")


def test_sctp_peers_open_and_relay(result):
    assert "error" not in result, result.get("error", "") + result.get("fd1_log_tail", "")
    assert result["kernel_sctp"] and result["open"]
    assert result["protos"] == [132]  # every connection of the DRA is an SCTP socket
    assert result["assocs"] >= 4  # both associations, seen from both ends
    answers = result["answers"]
    assert len(answers) == 20 and {a["rc"] for a in answers.values()} == {"2001"}
    assert {a["origin"] for a in answers.values()} == {"fd1.srv"}
    assert sorted(result["server_requests"]) == sorted(answers)


def test_sctp_watchdog_and_dpr(result):
    assert "error" not in result, result.get("error", "")
    stats = result["stats"]
    assert stats["rx DWA"] >= 1
    assert stats["tx DPR"] >= 1 and stats["rx DPA"] >= 1
