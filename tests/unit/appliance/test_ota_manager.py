"""OtaManager's state file across boots, with a stand-in `rauc` on PATH (RAUC's own test/bin
style): install record -> trial boot on B -> marked good clears it; a failed trial records
its reason and asks for the reboot; the next boot on A reports the rollback."""

from __future__ import annotations

import json
import sys
import threading

from sipedge.appliance.ota import OtaManager

from sipedge.appliance.params import UpdateParams

PARAMS = UpdateParams(mark_good_after_s=60, trial_timeout_s=300)


def fake_rauc(tmp_path):
    log = tmp_path / "rauc.log"
    script = tmp_path / "rauc"
    script.write_text(f"""#!{sys.executable}
import json, sys
open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["status"] and "--output-format=json" in sys.argv:
    print(json.dumps({{"compatible": "sipedge-test", "booted": "B", "slots": []}}))
""")
    script.chmod(0o755)
    return str(script), log


def manager(tmp_path, booted, clock, reboots):
    rauc, log = fake_rauc(tmp_path)
    rel = tmp_path / "release"
    rel.write_text("VERSION=0.2.0\n")
    return OtaManager(PARAMS, data_dir=tmp_path / "data", rauc=rauc, release_file=rel,
                      system_conf=tmp_path / "none", clock=lambda: clock[0],
                      wall_clock=lambda: 1000.0, reboot_cmd=["true"], booted=booted), log


def write_pending(tmp_path, **extra):
    d = tmp_path / "data/ota"
    d.mkdir(parents=True, exist_ok=True)
    doc = {"pending": {"to_slot": "B", "to_version": "0.2.0", "from_slot": "A",
                       "from_version": "0.1.0", "installed_at": 5.0}, **extra}
    (d / "state.json").write_text(json.dumps(doc))


def state(tmp_path):
    return json.loads((tmp_path / "data/ota/state.json").read_text())


def test_trial_boot_marked_good_clears_pending(tmp_path):
    write_pending(tmp_path)
    clock = [0.0]
    m, log = manager(tmp_path, "B", clock, [])
    assert m.policy.trial and m.rollback is None
    m.on_supervisor_tick(30.0, "RUNNING", 30.0)
    assert "mark-good" not in log.read_text() if log.exists() else True
    m.on_supervisor_tick(61.0, "RUNNING", 61.0)
    for t in threading.enumerate():
        if t.name == "ota-mark-good":
            t.join(10)
    assert "status mark-good" in log.read_text()
    assert "pending" not in state(tmp_path)
    assert m.summary()["marked_good"] is True and m.marked_good


def test_failed_trial_then_rollback_report(tmp_path):
    write_pending(tmp_path)
    clock = [0.0]
    m, log = manager(tmp_path, "B", clock, [])
    m.on_supervisor_tick(10.0, "FAILED", 0.0)
    st = state(tmp_path)
    assert st["trial_failure"] == "proxy FAILED on the new slot B" and "pending" in st
    # the bootloader gave up on B: this boot is A again
    m2, _ = manager(tmp_path, "A", clock, [])
    assert m2.rollback == "rolled back from 0.2.0 to 0.1.0: proxy FAILED on the new slot B"
    st = state(tmp_path)
    assert "pending" not in st and st["last_rollback"]["message"] == m2.rollback
    assert m2.panel_alarms() == ["ROLLED BACK"]
    # reported once: the boot after that is an ordinary one
    m3, _ = manager(tmp_path, "A", clock, [])
    assert m3.rollback is None and m3.status()["last_rollback"]["message"].startswith("rolled")


def test_mark_good_retried_while_rauc_service_comes_up(tmp_path, monkeypatch):
    """RAUC's service starts behind the boot: a mark-good the CLI refuses at first (service
    not on the bus yet) is tried again, and the trial is cleared once it works."""
    import sipedge.appliance.ota as ota

    monkeypatch.setattr(ota, "MARK_GOOD_RETRY_S", 0.01)
    write_pending(tmp_path)
    clock = [0.0]
    m, log = manager(tmp_path, "B", clock, [])
    # the stand-in fails its first two mark-good calls, as the CLI does without the service
    fails = tmp_path / "fails"
    fails.write_text("2")
    script = tmp_path / "rauc"
    script.write_text(script.read_text() + f"""
if sys.argv[1:] == ["status", "mark-good"]:
    n = int(open({str(fails)!r}).read())
    if n:
        open({str(fails)!r}, "w").write(str(n - 1))
        sys.exit("rauc: service not available")
""")
    m.on_supervisor_tick(61.0, "RUNNING", 61.0)
    for t in threading.enumerate():
        if t.name == "ota-mark-good":
            t.join(10)
    assert log.read_text().count("status mark-good") == 3
    assert "pending" not in state(tmp_path) and m.marked_good


def test_boot_disk_partitions_are_never_update_media(tmp_path):
    """udev announces the boot disk's partitions again while the supervisor already listens
    (rootfs S10udev runs the re-announcement behind the boot): they are not mounted to look
    for bundles; a stick is."""
    from sipedge.appliance.hotplug import MediaInserted

    m, _log = manager(tmp_path, "A", [0.0], [])
    m.media_mount = str(tmp_path / "media")
    m.ignore_disk = "mmcblk0"
    calls = []

    def runner(argv):
        calls.append(list(argv))
        return __import__("subprocess").CompletedProcess(argv, 32, "", "not here")

    for dev in ("/dev/mmcblk0p1", "/dev/mmcblk0p2"):
        m.on_media(MediaInserted(dev, "vfat"), runner=runner)
    assert calls == []
    m.on_media(MediaInserted("/dev/sda1", "vfat"), runner=runner)
    assert calls and calls[0][0] == "mount" and "/dev/sda1" in calls[0]


def test_install_cut_while_writing_is_not_a_rollback(tmp_path):
    """A power cut while RAUC writes slot B (pending written=False): RAUC had not switched
    to B, the box boots A again. That is an interrupted install, reported as the last
    install's error, not a rollback; a boot of B itself (cut after RAUC switched but before
    the state file said so) counts the install as written and stays a trial."""
    write_pending(tmp_path)
    st = state(tmp_path)
    st["pending"]["written"] = False
    (tmp_path / "data/ota/state.json").write_text(json.dumps(st))
    m, _ = manager(tmp_path, "A", [0.0], [])
    assert m.rollback is None and not m.policy.trial and m.panel_alarms() == []
    last = state(tmp_path)["last_install"]
    assert last["result"] == "error" and last["version"] == "0.2.0"
    assert last["error"].startswith("install of 0.2.0 into slot B was interrupted"), last
    assert "pending" not in state(tmp_path) and m.status()["last_rollback"] is None

    (tmp_path / "data/ota/state.json").write_text(json.dumps(st))
    m, _ = manager(tmp_path, "B", [0.0], [])
    assert m.policy.trial and state(tmp_path)["pending"]["written"] is True
    m2, _ = manager(tmp_path, "A", [0.0], [])
    assert m2.rollback.startswith("rolled back from 0.2.0 to 0.1.0")
