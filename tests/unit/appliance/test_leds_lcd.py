"""LED class adapter on a fake sysfs tree; LCD adapter on a recording SMBus."""

import errno
from pathlib import Path

import pytest

from sipedge.appliance.fakes import FakeSmBus
from sipedge.appliance.lcd import I2cLcd, RawI2cBus, open_bus
from sipedge.appliance.leds import SysfsLeds, led_names, read_board_data, resolve_led
from sipedge.appliance.watchdog import HardwareError
from sipedge.panel import hd44780

REPO = Path(__file__).resolve().parents[3]


def make_led(sysfs, name, triggers="[none] timer heartbeat", max_brightness="255"):
    d = sysfs / "class" / "leds" / name
    d.mkdir(parents=True)
    (d / "brightness").write_text("0\n")
    (d / "max_brightness").write_text(max_brightness + "\n")
    (d / "trigger").write_text(triggers + "\n")
    return d


def test_on_off_blink_via_sysfs(tmp_path):
    green = make_led(tmp_path, "board:green:status")
    red = make_led(tmp_path, "board:red:error", triggers="[none]", max_brightness="1")
    leds = SysfsLeds({"status": "board:green:status", "error": "board:red:error"}, tmp_path)
    leds.set("status", "on")
    assert (green / "brightness").read_text() == "255"
    assert (green / "trigger").read_text() == "none"
    leds.set("status", "blink", 150, 350)
    assert (green / "trigger").read_text() == "timer"
    assert ((green / "delay_on").read_text(), (green / "delay_off").read_text()) == ("150", "350")
    leds.set("status", "off")
    assert (green / "trigger").read_text() == "none"
    assert (green / "brightness").read_text() == "0"
    leds.set("error", "blink", 100, 100)  # no timer trigger: lit steadily
    assert (red / "brightness").read_text() == "1"
    assert not (red / "delay_on").exists()


def test_missing_leds_are_skipped(tmp_path, caplog):
    leds = SysfsLeds({"status": "nope", "error": ""}, tmp_path)
    leds.set("status", "on")
    leds.set("error", "on")
    leds.set("other", "on")
    assert "LED missing role=status name=nope" in caplog.text


def test_led_names_from_board_data_globs_and_candidates(tmp_path):
    for name in ("input10::numlock", "input2::numlock", "input2::capslock", "PWR"):
        make_led(tmp_path, name)
    assert resolve_led(tmp_path, "input*::numlock") == "input2::numlock"  # natural order
    assert resolve_led(tmp_path, "ACT,led0") == "ACT"  # none present: first as written
    assert resolve_led(tmp_path, "led1, PWR") == "PWR"
    assert resolve_led(tmp_path, "input*::scrolllock,PWR") == "PWR"
    board_file = REPO / "board/qemu-x86_64/meta"  # the real board data
    board = read_board_data(board_file)
    assert board["STATUS_LED"] == "input*::numlock" and board["BOARD_ID"] == "qemu-x86_64"
    assert read_board_data(tmp_path / "missing") == {}
    # the config wins; "none" switches a board LED off
    assert led_names("", "", board) == {"status": "input*::numlock",
                                        "error": "input*::capslock"}
    assert led_names("my:led", "none", board) == {"status": "my:led", "error": ""}
    leds = SysfsLeds(led_names("", "", board), tmp_path)
    assert leds.names == {"status": "input2::numlock", "error": "input2::capslock"}
    leds.set("error", "on")
    assert (tmp_path / "class/leds/input2::capslock/brightness").read_text() == "255"


def test_write_failure_is_a_hardware_error(tmp_path):
    d = make_led(tmp_path, "x")
    (d / "brightness").unlink()
    (d / "brightness").mkdir()  # writing a directory fails
    with pytest.raises(HardwareError):
        SysfsLeds({"status": "x"}, tmp_path).set("status", "on")


def test_lcd_init_and_incremental_updates():
    bus = FakeSmBus()
    sleeps = []
    lcd = I2cLcd(bus, 0x27, 16, 2, sleep=sleeps.append)
    assert lcd.size == (16, 2)
    lcd.show(["CONFIG ERROR", "sipedge.toml:12"])
    init = hd44780.flatten(hd44780.init_ops(2))
    data = bus.data(0x27)
    assert data.startswith(init)
    assert sleeps[0] >= 0.04 and sum(sleeps) < 0.2
    body = data[len(init):]
    assert body == hd44780.flatten(hd44780.screen_ops(
        ["CONFIG ERROR    ", "sipedge.toml:12 "], 16))
    bus.writes.clear()
    lcd.show(["CONFIG ERROR", "other"])  # only row 1 is rewritten
    assert bus.data() == hd44780.flatten(hd44780.text_ops(1, "other", 16))
    bus.writes.clear()
    lcd.show(["CONFIG ERROR", "other"])
    assert bus.writes == []
    lcd.close()
    assert bus.closed


def test_lcd_bus_error_reinitialises_next_time():
    class Flaky(FakeSmBus):
        fail = True

        def write_byte(self, a, v):
            if self.fail:
                raise OSError(errno.EREMOTEIO, "Remote I/O error")
            super().write_byte(a, v)

    bus = Flaky()
    lcd = I2cLcd(bus, 0x27, sleep=lambda s: None)
    with pytest.raises(HardwareError, match="i2c@0x27"):
        lcd.show(["x"])
    bus.fail = False
    lcd.show(["x"])
    assert bus.data().startswith(hd44780.flatten(hd44780.init_ops(2)))


def test_open_bus_errors(tmp_path):
    with pytest.raises(HardwareError, match="no such device"):
        open_bus(7, tmp_path)
    with pytest.raises(HardwareError, match="open"):
        RawI2cBus(7, tmp_path)


def test_raw_bus_on_a_regular_file_fails_at_the_ioctl(tmp_path):
    (tmp_path / "i2c-1").touch()
    bus = RawI2cBus(1, tmp_path)
    with pytest.raises(OSError):
        bus.write_byte(0x27, 0x08)  # I2C_SLAVE is not a file ioctl: ENOTTY
    bus.close()


def test_address_is_never_cut_on_the_lcd():
    from sipedge.panel.pages import build_pages, fit_address

    assert fit_address("eth0 10.0.2.15/24", 16) == "eth0 10.0.2.15"
    assert fit_address("eth0 192.168.100.200/24", 16) == "192.168.100.200"
    assert fit_address("eth0 10.0.2.15/24", 20) == "eth0 10.0.2.15/24"
    pages = build_pages({"state": "healthy", "addresses": ["eth0 10.0.2.15/24"]}, 16, 2)
    assert pages[0][1] == "eth0 10.0.2.15  "


def test_booted_slot_from_the_kernel_command_line():
    from sipedge.appliance.supervisor_main import booted_slot

    assert booted_slot("root=/dev/vda2 rauc.slot=B quiet") == "B"
    assert booted_slot("root=/dev/vda2 quiet") is None
