"""Panel checks that run unchanged under CPython (pytest) and MicroPython (Node + WebAssembly).

Keep this file in the panel subset too (see app/sipedge/panel/README.md): plain asserts,
%-formatting, no pytest features. `run_all()` runs every `check_*` function.
"""

from sipedge.panel import hd44780, leds, pages, status


def check_panel_state_priorities():
    assert status.panel_state("RUNNING") == status.HEALTHY
    assert status.panel_state("RUNNING", alarms=1) == status.DEGRADED
    assert status.panel_state("STARTING") == status.BOOTING
    assert status.panel_state("BACKOFF") == status.DEGRADED
    assert status.panel_state("RUNNING", config_errors=2) == status.CONFIG_ERROR
    assert status.panel_state("FAILED", config_errors=2) == status.FAILED
    assert status.panel_state("FAILED", upgrading=True) == status.UPGRADING


def check_every_state_has_a_pattern_per_led():
    for state in status.STATES:
        for role in leds.ROLES:
            mode, on_ms, off_ms = leds.pattern_for(state, role)
            assert mode in ("on", "off", "blink")
            if mode == "blink":
                assert on_ms > 0 and off_ms > 0
    # distinguishable: no two states look the same
    looks = [tuple(leds.pattern_for(s, r) for r in leds.ROLES) for s in status.STATES]
    assert len(set(looks)) == len(looks)


def check_level_at():
    p = ("blink", 150, 150)
    assert [leds.level_at(p, t) for t in (0, 149, 150, 299, 300)] == [1, 1, 0, 0, 1]
    assert leds.level_at(leds.ON, 12345) == 1 and leds.level_at(leds.OFF, 0) == 0
    try:
        leds.level_at(("strobe", 1, 1), 0)
    except ValueError:
        pass
    else:
        raise AssertionError("unknown mode accepted")
    try:
        leds.pattern_for("nope", "status")
    except ValueError:
        pass
    else:
        raise AssertionError("unknown state accepted")


def check_fit():
    assert pages.fit("abc", 5) == "abc  "
    assert pages.fit("abcdefgh", 5) == "abcde"
    assert pages.fit(12, 3) == "12 "


def check_config_error_page_first():
    info = {"state": status.CONFIG_ERROR,
            "config_errors": ["/boot/sipedge.toml:12: watchdog.timeout_s: must be >= 1",
                              "/boot/sipedge.toml:20: core.workers: expected an integer"],
            "addresses": ["eth0 192.0.2.10/24"], "version": "1.2.3", "slot": "A"}
    p = pages.build_pages(info, 16, 2)
    assert p[0] == ["CONFIG ERROR    ", "sipedge.toml:12 "]
    assert p[1] == ["sipedge CONFIG E", "eth0 192.0.2.10 "]
    p4 = pages.build_pages(info, 20, 4)
    assert p4[0] == ["CONFIG ERROR        ", "sipedge.toml:12     ",
                     "watchdog.timeout_s: ", "+1 more             "]
    for page in p + p4:
        for line in page:
            assert len(line) in (16, 20)


def check_error_location_parsing():
    assert pages.error_location("/a/b.toml:7: k: r") == "b.toml:7"
    assert pages.error_location("b.toml:0: (file): No such file") == "b.toml:0"
    assert pages.error_location("weird") == "weird"
    assert pages.error_detail("f:1: key.x: too big") == "key.x: too big"


def check_pages_rotate_and_cover_everything():
    info = {"state": status.HEALTHY, "addresses": ["eth0 192.0.2.10/24", "eth1 198.51.100.2/24",
                                                   "eth0 2001:db8::10/64"],
            "registrations": 12, "calls": 3, "transactions": 40,
            "upstreams": [("carrier-a", True), ("carrier-b", False)],
            "alarms": ["upstream carrier-b down"], "version": "1.2.3", "slot": "B"}
    p = pages.build_pages(info, 16, 2)
    text = "\n".join(["|".join(page) for page in p])
    assert "sipedge OK" in text and "reg 12 call 3" in text and "trans 40" in text
    assert "carrier-a     UP" in text and "carrier-b   DOWN" in text
    # the address stays whole: the interface name gives way
    assert "ALARM" in text and "slot B" in text and "198.51.100.2" in text
    n = len(p)
    assert pages.page_at(p, 0, 4000) == p[0]
    assert pages.page_at(p, 4000, 4000) == p[1 % n]
    assert pages.page_at(p, 4000 * n, 4000) == p[0]
    assert pages.page_at([], 0, 4000) == []
    assert pages.build_pages({}, 8, 1)[0] == ["sipedge "]


def check_nibble_protocol():
    # 'A' = 0x41 with RS, backlight: high nibble 4, low nibble 1, each E high then low
    assert hd44780.byte(0x41, True, True) == bytes((0x4D, 0x49, 0x1D, 0x19))
    assert hd44780.byte(0x01, False, False) == bytes((0x04, 0x00, 0x14, 0x10))
    assert hd44780.command(hd44780.CLEAR) == (bytes((0x0C, 0x08, 0x1C, 0x18)), 2000)


def check_init_sequence():
    ops = hd44780.init_ops(2)
    data = hd44780.flatten(ops)
    assert data[:1] == bytes((0x08,))  # backlight on, E low
    assert data[1:9] == bytes((0x3C, 0x38, 0x3C, 0x38, 0x3C, 0x38, 0x2C, 0x28))
    assert ops[0][1] >= 40000 and ops[1][1] >= 4100  # data-sheet power-on delays
    # function set 0x28: 4-bit, 2 lines
    assert data[9:13] == bytes((0x2C, 0x28, 0x8C, 0x88))
    assert hd44780.flatten(hd44780.init_ops(1))[9:13] == bytes((0x2C, 0x28, 0x0C, 0x08))


def check_text_and_screen_ops():
    ops = hd44780.text_ops(1, "Hi", 16)
    data = hd44780.flatten(ops)
    assert data[:4] == hd44780.byte(0xC0, False, True)  # DDRAM 0x40: row 1
    assert data[4:8] == hd44780.byte(ord("H"), True, True)
    assert len(data) == 4 + 16 * 4  # padded to the full row
    assert hd44780.row_address(3, 20) == 0x54 and hd44780.row_address(2, 16) == 0x10
    assert hd44780.char_code("\\") == 0x3F and hd44780.char_code("~") == 0x3F
    assert hd44780.char_code("\u00e9") == 0x3F and hd44780.char_code("}") == 0x7D
    same = hd44780.screen_ops(["a", "b"], 16, ["a", "x"])
    assert hd44780.flatten(same)[:4] == hd44780.byte(0xC0, False, True)  # row 0 unchanged
    assert len(hd44780.screen_ops(["a", "b"], 16)) == 4


CHECKS = [check_panel_state_priorities, check_every_state_has_a_pattern_per_led, check_level_at,
          check_fit, check_config_error_page_first, check_error_location_parsing,
          check_pages_rotate_and_cover_everything, check_nibble_protocol, check_init_sequence,
          check_text_and_screen_ops]


def run_all():
    for check in CHECKS:
        check()
        print("ok %s" % check.__name__)
    print("PANEL-CHECKS %d passed" % len(CHECKS))
