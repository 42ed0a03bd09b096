"""Boot-loop guard record: the pure reading of it (`history`) and its file I/O in a tmp dir."""

import json
import os

import pytest
from sipedge.appliance.resetguard import (
    RECORD_PATH,
    ResetHistory,
    ResetRecord,
    ResetRecordStore,
    history,
)

BOOT_A = "5d1c6b8e-0000-4000-8000-00000000000a"
BOOT_B = "5d1c6b8e-0000-4000-8000-00000000000b"


def store(tmp_path, boot_id=BOOT_B):
    (tmp_path / "boot_id").write_text(boot_id + "\n")
    return ResetRecordStore(tmp_path / "data", tmp_path / "boot_id")


# ------------------------------------------------------------------ history (pure)

def test_no_record_means_no_reset():
    h = history(None, BOOT_B)
    assert h == ResetHistory() and h.resets_allowed(1)


def test_record_from_another_boot_is_a_reset_that_happened():
    h = history(ResetRecord(2, "proxy hung 3 times", BOOT_A, 1.7e9), BOOT_B)
    assert h.resets == 2 and h.previous_reason == "proxy hung 3 times" and h.present
    assert h.resets_allowed(3) and not h.resets_allowed(2)
    assert h.resets_allowed(0)  # 0: no limit


def test_record_from_this_boot_did_not_reset():
    """The supervisor was restarted after writing it, before the watchdog fired."""
    h = history(ResetRecord(1, "proxy hung 3 times", BOOT_B, 1.7e9), BOOT_B)
    assert h.resets == 0 and h.previous_reason is None and h.present


def test_unknown_boot_id_counts_the_record():
    h = history(ResetRecord(1, "x", "", 0.0), "")
    assert h.resets == 1 and h.previous_reason == "x"


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"resets": 0, "reason": "x"}',
                                  b'{"resets": true, "reason": "x"}',
                                  b'{"resets": 1, "reason": 5}',
                                  b'{"resets": 1, "reason": "x", "time": "now"}',
                                  b"\xff\xfe"])
def test_malformed_records_are_rejected(data):
    with pytest.raises(ValueError):
        ResetRecord.from_json(data)


# ------------------------------------------------------------------ store (file I/O)

def test_save_load_round_trip_atomic_and_clear(tmp_path):
    s = store(tmp_path)
    assert s.load() is None and s.history() == ResetHistory()
    rec = ResetRecord(1, "proxy hung 3 times in a row", s.boot_id(), 1764000000.5)
    s.save(rec)  # creates <data>/supervisor/
    assert s.path == tmp_path / "data" / RECORD_PATH
    assert s.load() == rec
    assert json.loads(s.path.read_text())["boot_id"] == BOOT_B
    assert sorted(os.listdir(s.path.parent)) == ["watchdog-reset.json"]  # no temp file left
    assert s.history().resets == 0  # same boot: the reset did not happen
    assert store(tmp_path, BOOT_A).history().previous_reason == "proxy hung 3 times in a row"
    s.save(ResetRecord(2, "again", BOOT_B, 1.0))
    assert s.load().resets == 2
    s.clear()
    assert not s.path.exists() and s.load() is None
    s.clear()  # already gone: fine


def test_broken_record_is_ignored_and_logged(tmp_path, caplog):
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    s.path.write_bytes(b"garbage")
    assert s.load() is None
    assert "broken watchdog reset record" in caplog.text


def test_missing_boot_id_file(tmp_path):
    s = ResetRecordStore(tmp_path, tmp_path / "nope")
    assert s.boot_id() == ""


def test_save_fails_on_unwritable_data_dir(tmp_path):
    (tmp_path / "data").write_text("a file, not a directory")
    s = store(tmp_path)
    with pytest.raises(OSError):
        s.save(ResetRecord(1, "x", BOOT_B, 0.0))
