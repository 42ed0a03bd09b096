"""SD-card config with last-known-good: boot file valid / invalid / absent, atomic writes."""

import os

import pytest

from sipedge.appliance.sdconfig import (SOURCE_BOOT, SOURCE_DEFAULT, SOURCE_LKG,
                                        BootConfigManager, atomic_write)

VALID = """\
[core]
workers = 1

[watchdog]
timeout_s = 20
"""

VALID2 = VALID.replace("timeout_s = 20", "timeout_s = 30")

INVALID = """\
[core]
workers = 1

[watchdog]
timeout_s = 0
"""


@pytest.fixture
def mgr(tmp_path):
    (tmp_path / "boot").mkdir()
    return BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")


def test_valid_boot_file_runs_and_becomes_last_known_good_only_when_promoted(mgr):
    mgr.boot_path.write_text(VALID)
    c = mgr.select()
    assert c.source == SOURCE_BOOT and c.path == mgr.boot_path and c.errors == []
    assert c.config.watchdog.timeout_s == 20
    assert not c.proven and not mgr.lkg_path.exists()  # on trial: not yet last-known-good
    assert mgr.promote(c)  # the supervisor saw the proxy healthy on it long enough
    assert mgr.lkg_path.read_bytes() == VALID.encode()
    assert not list(mgr.lkg_path.parent.glob(".*tmp"))
    assert mgr.select().proven


def test_rejected_config_is_rolled_back_and_not_retried_until_changed(tmp_path, mgr):
    mgr.boot_path.write_text(VALID)
    mgr.promote(mgr.select())
    mgr.boot_path.write_text(VALID2)
    c = mgr.select()
    assert c.source == SOURCE_BOOT and not c.proven
    back = mgr.reject(c, "2 failed starts: proxy cannot start: routing script x not found")
    assert back.source == SOURCE_LKG and back.config.watchdog.timeout_s == 20
    assert "rolled back to last-known-good: 2 failed starts" in back.errors[0]
    assert mgr.lkg_path.read_text() == VALID  # the rejected file never became LKG
    # a new supervisor (reboot) does not try the same file again
    again = BootConfigManager(mgr.boot_path, mgr.data_dir).select()
    assert again.source == SOURCE_LKG and "routing script x not found" in again.errors[0]
    mgr.boot_path.write_text(VALID2 + "# changed\n")
    assert mgr.select().source == SOURCE_BOOT


def test_factory_file_is_the_fallback_when_given(tmp_path, mgr):
    from sipedge.config import FACTORY_PATH

    m = BootConfigManager(mgr.boot_path, mgr.data_dir, factory_path=FACTORY_PATH)
    mgr.boot_path.write_text(INVALID)
    c = m.select()
    assert c.source == SOURCE_DEFAULT and c.path == FACTORY_PATH and c.errors
    assert {lp.address for lp in c.config.listen} == {"0.0.0.0"}  # never loopback only


def test_invalid_boot_file_falls_back_to_last_known_good(mgr):
    mgr.boot_path.write_text(VALID)
    mgr.promote(mgr.select())
    mgr.boot_path.write_text(INVALID)
    before = os.stat(mgr.boot_path)
    c = mgr.select()
    assert c.source == SOURCE_LKG and c.path == mgr.lkg_path
    assert c.config.watchdog.timeout_s == 20
    assert len(c.errors) == 1
    assert c.errors[0].startswith(f"{mgr.boot_path}:5: watchdog.timeout_s: ")
    assert c.issues[0].line == 5
    # the invalid file never replaces last-known-good, and the boot file is untouched
    assert mgr.lkg_path.read_text() == VALID
    after = os.stat(mgr.boot_path)
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
    d = c.as_dict()
    assert d["source"] == "last-known-good" and d["issues"][0]["key"] == "watchdog.timeout_s"


def test_invalid_without_last_known_good_runs_embedded_default(mgr):
    mgr.boot_path.write_text("[core\nworkers = 1\n")
    c = mgr.select()
    assert c.source == SOURCE_DEFAULT and c.path is None
    assert c.errors and ":1: (syntax)" in c.errors[0]
    assert not mgr.lkg_path.exists()


def test_missing_boot_file_is_not_an_error(mgr):
    c = mgr.select()
    assert c.source == SOURCE_DEFAULT and c.errors == [] and not c.boot_present
    mgr.lkg_path.parent.mkdir(parents=True)
    mgr.lkg_path.write_text(VALID)
    c = mgr.select()
    assert c.source == SOURCE_LKG and c.errors == []


def test_last_known_good_that_no_longer_validates_is_skipped(mgr):
    mgr.lkg_path.parent.mkdir(parents=True)
    mgr.lkg_path.write_text("[old_section]\nx = 1\n")  # e.g. schema changed by an update
    mgr.boot_path.write_text(INVALID)
    c = mgr.select()
    assert c.source == SOURCE_DEFAULT and len(c.errors) == 1


def test_new_valid_file_replaces_last_known_good(mgr):
    mgr.boot_path.write_text(VALID)
    mgr.promote(mgr.select())
    mgr.boot_path.write_text(VALID2)
    c = mgr.select()
    assert c.config.watchdog.timeout_s == 30 and mgr.lkg_path.read_text() == VALID
    mgr.promote(c)
    assert mgr.lkg_path.read_text() == VALID2


def test_write_boot_is_atomic_and_check_text_validates(mgr):
    mgr.boot_path.write_text(VALID)
    assert mgr.check_text(VALID2) == []
    issues = mgr.check_text(INVALID)
    assert [i.key for i in issues] == ["watchdog.timeout_s"]
    assert issues[0].file == str(mgr.boot_path)
    mgr.write_boot(VALID2)
    assert mgr.boot_text() == VALID2
    assert sorted(p.name for p in mgr.boot_path.parent.iterdir()) == ["sipedge.toml"]


def test_atomic_write_leaves_old_file_when_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.toml"
    target.write_text("old")

    def boom(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.toml"]


def test_unwritable_data_dir_still_runs_the_boot_file(tmp_path):
    (tmp_path / "boot").mkdir()
    data = tmp_path / "data"
    data.write_text("not a directory")
    m = BootConfigManager(tmp_path / "boot" / "sipedge.toml", data)
    m.boot_path.write_text(VALID)
    assert m.select().source == SOURCE_BOOT


def test_forget_lkg(mgr):
    mgr.boot_path.write_text(VALID)
    mgr.promote(mgr.select())
    mgr.forget_lkg()
    assert not mgr.lkg_path.exists()
    mgr.forget_lkg()


def test_write_boot_remounts_a_read_only_boot_partition(tmp_path, monkeypatch):
    import errno

    from sipedge.appliance import sdconfig

    boot = tmp_path / "boot"
    boot.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda1 {boot} vfat ro,relatime 0 0\n/dev/vda2 / ext4 ro 0 0\n")
    calls = []
    state = {"rw": False}

    def fake_remount(mp, mode):
        calls.append((mp, mode))
        state["rw"] = mode == "rw"

    real = sdconfig.atomic_write

    def guarded(path, data):
        if path.parent == boot and not state["rw"]:
            raise OSError(errno.EROFS, "Read-only file system")
        real(path, data)

    monkeypatch.setattr(sdconfig, "atomic_write", guarded)
    m = BootConfigManager(boot / "sipedge.toml", tmp_path / "data", remount=fake_remount,
                          mounts=str(mounts))
    m.write_boot(VALID)
    assert m.boot_text() == VALID
    assert calls == [(boot, "rw"), (boot, "ro")]


def test_mount_point(tmp_path):
    from sipedge.appliance.sdconfig import mount_point

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/root / ext4 ro 0 0\n/dev/vda1 /boot vfat ro 0 0\n")
    from pathlib import Path

    assert mount_point(Path("/boot/sipedge.toml"), str(mounts)) == Path("/boot")
    assert mount_point(Path("/data/x"), str(mounts)) == Path("/")
    assert mount_point(Path("/x"), str(tmp_path / "none")) is None
