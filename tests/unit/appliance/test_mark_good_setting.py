"""One mark-good setting (issue 12): `[update] mark_good_after_s` drives both the full update
agent (ota.OtaManager) and a box with only the `rauc` command line. The older
`[supervisor] mark_good_after_s` is still honoured with a warning naming file:line; setting
both is an error (which one would win is not obvious)."""

import subprocess
import sys

import pytest

from sipedge.config import ConfigError, load_text
from test_supervisor_loop import Harness, State, until

SUP = "[supervisor]\nstart_timeout_s = 30\n"


def test_update_key_is_the_setting_and_defaults_to_60():
    cfg = load_text(SUP, "box.toml")
    assert cfg.update.mark_good_after_s == 60.0 and cfg.supervisor.mark_good_after_s is None
    assert cfg.warnings == []
    cfg = load_text(SUP + "[update]\nmark_good_after_s = 15\n", "box.toml")
    assert cfg.update.mark_good_after_s == 15.0 and cfg.warnings == []


def test_old_supervisor_key_is_used_with_a_warning():
    cfg = load_text(SUP + "mark_good_after_s = 45\n", "box.toml")
    assert cfg.update.mark_good_after_s == 45.0
    assert [str(w) for w in cfg.warnings] == [
        "box.toml:3: supervisor.mark_good_after_s: deprecated: use [update] mark_good_after_s "
        "(this value 45 is used for it)"]


def test_both_keys_is_an_error_at_the_old_ones_line():
    with pytest.raises(ConfigError) as exc:
        load_text(SUP + "mark_good_after_s = 45\n\n[update]\nmark_good_after_s = 60\n",
                  "box.toml")
    assert [str(e) for e in exc.value.errors] == [
        "box.toml:3: supervisor.mark_good_after_s: deprecated, and [update] mark_good_after_s "
        "is set too: keep only [update] mark_good_after_s"]


def test_old_key_still_checked_for_range():
    with pytest.raises(ConfigError, match="supervisor.mark_good_after_s: must be >= 0"):
        load_text(SUP + "mark_good_after_s = -1\n", "box.toml")


def test_check_config_prints_the_warning_and_passes(tmp_path):
    f = tmp_path / "sipedge.toml"
    f.write_text(SUP + "mark_good_after_s = 45\n")
    res = subprocess.run([sys.executable, "-m", "sipedge", "--check-config", str(f)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"warning: {f}:3: supervisor.mark_good_after_s: deprecated: use [update] " \
           "mark_good_after_s" in res.stdout
    assert res.stdout.rstrip().endswith(f"{f}: OK")


async def test_rauc_cli_box_marks_good_after_the_update_setting(tmp_path):
    # a box with `rauc` but no A/B system.conf gets the plain RaucCli port (FakeUpdateAgent
    # here): the supervisor marks good after [update] mark_good_after_s of health
    text = ("[supervisor]\ncommand = [\"proxy-bin\"]\nrespawn_timeout_s = 0.05\n"
            "start_timeout_s = 2\nhealth_interval_s = 0.1\nhealth_timeout_s = 0.5\n\n"
            "[watchdog]\npet_interval_s = 0.1\n\n[update]\nmark_good_after_s = 0.3\n")
    h = await Harness(tmp_path, text=text).start()
    await until(lambda: h.state() is State.RUNNING)
    assert h.ota.marked_good == 0
    await until(lambda: h.ota.marked_good == 1)
    assert await h.stop() == 0
