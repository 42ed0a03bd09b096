"""pyudev sees kernel uevents for a network device created in the test's own namespace."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.needs_root
APP = Path(__file__).resolve().parents[3] / "app"

LISTENER = """
import asyncio, sys
from sipedge.appliance.hotplug import UdevMonitor
async def main():
    mon = UdevMonitor(source="kernel")
    print("ready", flush=True)
    async for ev in mon.events():
        print(repr(ev), flush=True)
        if getattr(ev, "ifname", "") == "hpb":
            return
asyncio.run(asyncio.wait_for(main(), 20))
"""


def test_udev_monitor_reports_new_interface(tmp_path):
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    pytest.importorskip("pyudev")
    ns = f"sipedge-hp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONPATH=str(APP)))
        assert p.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "-n", ns, "link", "add", "hpa", "type", "veth", "peer", "name",
                        "hpb"], check=True, timeout=10)
        out, _ = p.communicate(timeout=25)
        assert p.returncode == 0, out
        assert "NetDeviceAdded(ifname='hpb')" in out
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10)
