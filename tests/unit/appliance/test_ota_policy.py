"""The trial boot after an update, sans-IO with a number for `now`: mark good only after
`mark_good_after_s` of health, reboot a trial boot that never gets healthy (or FAILED), and
the rollback report on the old slot. Plus the parsers of RAUC's output."""

from __future__ import annotations

from sipedge.appliance.ota import (MarkGood, Pending, Reboot, TrialPolicy, parse_progress,
                                   parse_shell_info, slots_from_status)

P = Pending("B", "0.1.0+2", "A", "0.1.0+1", 100.0)


def pol(booted, pending=P, failure=""):
    return TrialPolicy(booted=booted, pending=pending, mark_good_after_s=60,
                       trial_timeout_s=300, started_at=1000.0, trial_failure=failure)


def test_normal_boot_marks_good_after_health_only():
    p = pol("A", pending=None)
    assert p.boot_report() is None and not p.trial
    assert p.tick(1010, "STARTING", 0) == []
    assert p.tick(1050, "RUNNING", 59.9) == []
    assert p.tick(1080, "DEGRADED", 0) == []  # health lost: the clock starts again
    assert p.tick(1200, "RUNNING", 60) == [MarkGood("A")]
    assert p.tick(1300, "RUNNING", 160) == []  # once
    assert p.tick(99999, "FAILED", 0) == []  # not a trial: never reboots


def test_trial_boot_marked_good():
    p = pol("B")
    assert p.trial and p.boot_report() is None and p.next_deadline() == 1300
    assert p.tick(1100, "RUNNING", 30) == []
    assert p.tick(1130, "RUNNING", 60) == [MarkGood("B")]
    assert p.tick(1400, "RUNNING", 330) == [] and p.next_deadline() is None


def test_trial_boot_never_healthy_reboots_once():
    p = pol("B")
    assert p.tick(1299, "STARTING", 0) == []
    acts = p.tick(1300, "BACKOFF", 0)
    assert len(acts) == 1 and isinstance(acts[0], Reboot) and "within 300s" in acts[0].reason
    assert p.tick(1400, "BACKOFF", 0) == []


def test_trial_boot_failed_reboots_at_once():
    p = pol("B")
    acts = p.tick(1020, "FAILED", 0)
    assert acts == [Reboot("proxy FAILED on the new slot B")]


def test_rollback_report():
    assert pol("A", failure="proxy FAILED on the new slot B").boot_report() == \
        "rolled back from 0.1.0+2 to 0.1.0+1: proxy FAILED on the new slot B"
    assert "did not come up" in pol("A").boot_report()  # the kernel never booted
    assert pol("B").boot_report() is None


def test_rauc_output_parsers():
    assert parse_progress("  20% Checking bundle done.") == (20, "Checking bundle done.")
    assert parse_progress("100% Installing done.") == (100, "Installing done.")
    assert parse_progress("installing `/data/x.raucb`: succeeded") is None
    info = parse_shell_info("RAUC_MF_COMPATIBLE='sipedge-qemu-x86_64'\nRAUC_MF_VERSION='1.0.0'\n"
                            "junk line\nRAUC_IMAGE_SIZE_0=8388608\n")
    assert info == {"RAUC_MF_COMPATIBLE": "sipedge-qemu-x86_64", "RAUC_MF_VERSION": "1.0.0",
                    "RAUC_IMAGE_SIZE_0": "8388608"}
    doc = {"compatible": "c", "booted": "A", "slots": [
        {"rootfs.0": {"class": "rootfs", "device": "/dev/vda2", "bootname": "A",
                      "state": "booted", "boot_status": "good",
                      "slot_status": {"bundle": {"version": "0.1.0+1"}, "status": "ok"}}},
        {"rootfs.1": {"class": "rootfs", "device": "/dev/vda3", "bootname": "B",
                      "state": "inactive", "boot_status": "bad", "slot_status": {}}},
        {"efi.0": {"class": "efi"}}]}
    s = slots_from_status(doc)
    assert set(s) == {"A", "B"} and s["A"]["version"] == "0.1.0+1"
    assert s["B"]["boot_status"] == "bad" and s["B"]["version"] is None
