"""The console's `update` commands against a recording RPC: status text, install asks
first and then streams progress from tick(), check reports the offer."""

from __future__ import annotations

from sipedge.appliance.ota_console import UpdateCommands, format_status


class FakeRpc:
    def __init__(self):
        self.calls = []
        self.progress = {"lines": [], "done": False}
        self.last_check = {"time": 1.0}

    def __call__(self, method, params):
        self.calls.append((method, params))
        if method == "update.status":
            return {"booted": "A", "version": "0.1.0+1", "marked_good": True,
                    "slots": {"A": {"version": "0.1.0+1", "state": "booted",
                                    "boot_status": "good", "device": "/dev/vda2"},
                              "B": {"version": None, "state": "inactive",
                                    "boot_status": "bad", "device": "/dev/vda3"}},
                    "rollback": "rolled back from 0.2.0 to 0.1.0+1: proxy FAILED",
                    "channel": "stable", "url": ""}
        if method == "update.progress":
            return self.progress
        if method == "update.last_check":
            return self.last_check
        if method == "update.offer":
            return getattr(self, "offer", None)
        return {}


def confirm(question, answer, action):
    confirm.pending = action
    return f"{question} [{answer}/N] "


def test_status_install_progress_and_check():
    rpc = FakeRpc()
    u = UpdateCommands(rpc, confirm)
    assert u.tick(0.0) == ""  # no USB offer
    rpc.offer = {"device": "/dev/sda1", "file": "/run/x/a.raucb", "name": "a.raucb",
                 "version": "0.2.0", "compatible": "sipedge-qemu-x86_64", "signed": True}
    assert u.tick(1.0) == ""  # polled every 5 s
    assert u.tick(5.0) == ("update bundle on /dev/sda1: a.raucb version 0.2.0 for "
                           "sipedge-qemu-x86_64\ninstall it with: update install usb")
    rpc.offer = None
    u.tick(10.0)
    text = u.run(["status"])
    assert "booted:   slot A version 0.1.0+1 (marked good)" in text
    assert "ROLLBACK: rolled back from 0.2.0 to 0.1.0+1: proxy FAILED" in text
    assert "slot B:   - state=inactive boot=bad" in text
    n = len(rpc.calls)
    q = u.run(["install", "/data/x.raucb", "--force"])
    assert q.startswith("install /data/x.raucb (forced)?") and len(rpc.calls) == n
    assert "progress follows" in confirm.pending()
    assert rpc.calls[-1] == ("update.install", {"source": "/data/x.raucb", "force": True})
    rpc.progress = {"lines": ["  0% checking bundle", " 30% installing"], "done": False}
    assert u.tick(11.0) == "  0% checking bundle\n 30% installing"
    assert u.tick(11.5) == ""  # polled at most once a second
    rpc.progress = {"lines": ["  0% checking bundle", " 30% installing", "100% installed"],
                    "done": True, "ok": True}
    assert u.tick(12.0) == "100% installed\nupdate: done, reboot to start the new version"
    assert u.tick(20.0) == ""
    assert u.run(["check"]) == "checking the channel..."
    assert u.tick(21.0) == ""
    rpc.last_check = {"time": 2.0, "ok": True, "reason": "0.1.0+1 -> 0.2.0",
                      "available": {"version": "0.2.0", "size": 5, "url": "http://x/b.raucb"}}
    out = u.tick(22.0)
    assert "update available: 0.2.0" in out and "update install http://x/b.raucb" in out
    assert u.run(["bogus"]).startswith("usage:")


def test_format_status_minimal():
    assert format_status({"booted": "A", "version": "1.0.0"}).startswith("booted:   slot A")
