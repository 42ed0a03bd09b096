"""io/netaddr.py (the worker's local addresses, no pyroute2) against iproute2 on this host."""
import json
import shutil
import subprocess

import pytest

from sipedge.io.netaddr import NLMSG_HDR, parse_addresses, host_addresses


@pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 (ip) not installed")
def test_host_addresses_match_ip_addr():
    out = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                                    check=True).stdout)
    expected = {a["local"] for link in out for a in link.get("addr_info", []) if "local" in a}
    assert host_addresses() >= expected
    assert "127.0.0.1" in host_addresses()


def test_error_answer_raises_and_truncated_input_stops():
    err = NLMSG_HDR.pack(NLMSG_HDR.size + 4, 2, 0, 1, 0) + (-1).to_bytes(4, "little", signed=True)
    with pytest.raises(OSError):
        parse_addresses(err)
    assert parse_addresses(b"\x10\x00") == (set(), False)
    done = NLMSG_HDR.pack(NLMSG_HDR.size, 3, 0, 1, 0)
    assert parse_addresses(done) == (set(), True)
