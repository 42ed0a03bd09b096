"""Management console, sans-IO: TOML key editing, line editor, login/lock-out, commands."""

import pytest

from sipedge.appliance.auth import LoginGuard, hash_password, is_valid_hash, verify_password
from sipedge.appliance.console import ConsoleSession, LineEditor, hide_secrets
from sipedge.appliance.sdconfig import BootConfigManager

HASH = hash_password("s3cret", iterations=1000, salt=b"0123456789abcdef")

BOOT = """\
# my box
[core]
workers = 2  # two

[watchdog]
timeout_s = 15

[management]
password_hash = "%s"
""" % HASH


# ------------------------------------------------------------------ auth

def test_password_hash_roundtrip():
    h = hash_password("pw", iterations=1000)
    assert is_valid_hash(h) and h.startswith("pbkdf2_sha256$1000$")
    assert verify_password("pw", h) and not verify_password("pW", h)
    assert hash_password("pw", iterations=1000) != h  # salted
    for bad in ("", "pbkdf2_sha256$x$a$b", "md5$1$a$b", "pbkdf2_sha256$0$AA$AA", "a$b"):
        assert not verify_password("pw", bad)


def test_login_guard_locks_out_and_expires():
    g = LoginGuard(3, 60)
    for t in (0, 1):
        g.record(False, t)
    assert g.locked(2) == 0
    g.record(False, 2)
    assert g.locked(3) == 59
    assert g.locked(62) == 0 and g.failures == 0
    g.record(False, 63)
    g.record(True, 64)
    assert g.failures == 0


# ------------------------------------------------------------------ TOML editing

def test_hide_secrets():
    assert HASH not in hide_secrets(BOOT) and 'password_hash = "<hidden>"' in hide_secrets(BOOT)


# ------------------------------------------------------------------ line editor

def test_line_editor_keys():
    ed = LineEditor()
    echo, lines = ed.feed(b"stat")
    assert echo == "stat" and lines == []
    echo, lines = ed.feed(b"x\x7fus\r\n")
    assert lines == ["status"]
    _, lines = ed.feed(b"abc\x15help\r")
    assert lines == ["help"]
    _, lines = ed.feed(b"\x1b[A\x1b[A\r")  # history: two up is "status"
    assert lines == ["status"]
    _, lines = ed.feed(b"sttus\x1b[D\x1b[D\x1b[Da\r")  # cursor left, insert
    assert lines == ["status"]
    _, lines = ed.feed(b"junk\x03")
    assert lines == [""]
    _, lines = ed.feed(b"\x04")
    assert lines == [None]
    _, lines = ed.feed(b"a\x1b[C\x1b[Bb\nc\r")
    assert lines == ["ab", "c"]


def test_password_is_not_echoed():
    ed = LineEditor()
    ed.echo = False
    echo, lines = ed.feed(b"secret\r")
    assert echo == "\r\n" and lines == ["secret"] and ed.history == []


# ------------------------------------------------------------------ session

class Backend:
    def __init__(self, tmp_path):
        (tmp_path / "boot").mkdir()
        self.src = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
        self.src.boot_path.write_text(BOOT)
        self.calls = []
        self.wd_extra = {}

    def status(self):
        return {"state": "RUNNING", "panel": "healthy", "pid": 99, "restarts": 0, "crashes": 0,
                "config": {"source": "boot", "path": "/boot/sipedge.toml", "errors": 0},
                "health": {"ok": True, "loop_lag_ms": 1.0},
                "watchdog": {"armed": True, "pets": 7, **self.wd_extra}, "version": "0.1.0",
                "problem": ""}

    def boot_text(self):
        return self.src.boot_text()

    def check_text(self, text):
        return [str(i) for i in self.src.check_text(text)]

    def write_boot(self, text):
        self.calls.append("write")
        self.src.write_boot(text)

    def config_errors(self):
        return {"source": "boot", "path": "/boot/sipedge.toml", "errors": []}

    def apply(self):
        self.calls.append("apply")

    def rpc(self, method, params):
        self.calls.append(("rpc", method, params))
        return {"ok": True}

    def logs(self, n):
        return [f"line {i}" for i in range(n)]

    def reboot(self):
        self.calls.append("reboot")

    def factory_reset(self):
        self.calls.append("factory-reset")

    def media_config(self):
        return self.media

    def lkg_text(self):
        return self.lkg

    media = None
    lkg = None


@pytest.fixture
def session(tmp_path):
    b = Backend(tmp_path)
    s = ConsoleSession(b, lambda: HASH, LoginGuard(3, 60), idle_logout_s=100)
    assert b"password: " in s.greeting(0)
    return s, b


def say(s, line, now=1.0):
    return s.feed(line.encode() + b"\r", now).decode()


def login(s, now=1.0):
    out = say(s, "s3cret", now)
    assert s.logged_in and out.endswith("sipedge> ")


def test_login_lockout_and_unlock(session):
    s, _ = session
    for i in range(2):
        assert "login incorrect" in say(s, "nope", 1 + i)
    out = say(s, "nope", 3)
    assert "locked for 60s" in out
    assert "locked" in say(s, "s3cret", 10) and not s.logged_in  # even the right one
    login(s, 64)


def test_disabled_without_password(tmp_path):
    s = ConsoleSession(Backend(tmp_path), lambda: "", LoginGuard(3, 60))
    assert b"console disabled" in s.greeting(0)
    assert "console disabled" in say(s, "anything") and not s.logged_in


def test_status_help_logs_ctl(session):
    s, b = session
    login(s)
    out = say(s, "status")
    assert "state:    RUNNING (panel healthy)" in out and "previous boot" not in out
    b.wd_extra = {"previous_reset": "previous boot ended in a watchdog reset: hung",
                  "reset_suppressed": "proxy hung 3 times in a row"}
    out = say(s, "status")
    assert "watchdog: previous boot ended in a watchdog reset: hung" in out
    assert "watchdog: reset suppressed, max_resets reached: proxy hung 3 times" in out
    assert "config set KEY VALUE" in say(s, "help")
    assert say(s, "logs 2").startswith("logs 2\r\nline 0\r\nline 1\r\n")
    say(s, "ctl stats verbose=true name=x y")
    say(s, "reload routes")
    assert b.calls == [("rpc", "stats", {"verbose": True, "name": "x", "2": "y"}),
                       ("rpc", "route.reload", {})]
    assert "unknown command" in say(s, "frobnicate")
    assert "<hidden>" in say(s, "show config")
    assert "config OK" in say(s, "config check")
    assert "no errors" in say(s, "show errors")


def test_config_set_valid_diff_confirm_write(session):
    s, b = session
    login(s)
    out = say(s, "config set watchdog.timeout_s 30")
    assert "-timeout_s = 15\r\n+timeout_s = 30" in out and out.endswith("write it? [y/N] ")
    assert "written" in say(s, "y")
    assert "timeout_s = 30" in b.src.boot_text() and b.calls == ["write"]
    assert "applying" in say(s, "apply")
    assert b.calls == ["write", "apply"]


def test_config_set_declined_or_invalid_changes_nothing(session):
    s, b = session
    login(s)
    say(s, "config set watchdog.timeout_s 30")
    assert "cancelled" in say(s, "n")
    out = say(s, "config set watchdog.timeout_s 0")
    assert "not changed" in out and "watchdog.timeout_s" in out
    assert "not changed" in say(s, "config set watchdog.nonsense 1")
    assert "no change" in say(s, "config set watchdog.timeout_s 15")
    assert "error:" in say(s, "config set timeout 1")
    assert b.src.boot_text() == BOOT and b.calls == []


def test_factory_reset_and_reboot_need_confirmation(session):
    s, b = session
    login(s)
    assert "type 'yes'" in say(s, "factory-reset")
    assert "cancelled" in say(s, "y")
    say(s, "factory-reset")
    assert "factory default written" in say(s, "yes")
    say(s, "reboot")
    assert "rebooting" in say(s, "y")
    assert b.calls == ["factory-reset", "reboot"]


def test_idle_logout_and_ctrl_d(session):
    s, _ = session
    login(s, 1)
    assert s.tick(50) == b""
    assert b"idle timeout" in s.tick(102) and not s.logged_in
    login(s, 103)
    assert b"logged out" in s.feed(b"\x04", 104) and not s.logged_in
    login(s, 105)
    assert "logged out" in say(s, "logout", 106)


def test_failing_command_is_reported_not_fatal(session):
    s, b = session
    login(s)

    def boom():
        raise RuntimeError("socket gone")
    b.status = boom
    out = say(s, "status")
    assert "error: socket gone" in out and out.endswith("sipedge> ")


def test_config_import_from_media(session):
    from sipedge.appliance.hotplug import MediaConfig

    s, b = session
    login(s)
    assert "no config on removable media" in say(s, "config import")
    b.media = MediaConfig("/dev/sda1", "[core]\nworkers = 1\n", ("/dev/sda1:x:1: k: bad",))
    assert "is invalid" in say(s, "config import") and b.calls == []
    new = BOOT.replace("timeout_s = 15", "timeout_s = 45")
    b.media = MediaConfig("/dev/sda1", new)
    out = say(s, "config import")
    assert "+timeout_s = 45" in out and out.endswith("write it? [y/N] ")
    assert "written" in say(s, "y")
    assert b.src.boot_text() == new
    assert "no change" in say(s, "config import")


def test_status_page_shows_flood_defence_blocks(session):
    """Issue 14: blocked sources are visible on the console status page."""
    s, b = session
    b.security = lambda: {"blocked_now": 2, "sample": ["198.51.100.7", "198.51.100.8"],
                          "blocks_total": 5, "unblocks_total": 3}
    login(s)
    out = say(s, "status")
    assert ("security: 2 sources blocked now (198.51.100.7, 198.51.100.8), 5 blocks and "
            "3 unblocks since start") in out
    b.security = lambda: None  # no security module (or the proxy is down): no line
    assert "security:" not in say(s, "status")


# ------------------------------------------------------------------ issue 11: operator's console

LISTEN = BOOT + """
[[listen]]
proto = "udp"  # phones
address = "0.0.0.0"
port = 5060

[auth]
secret = "0123456789abcdefSECRET"
"""


def test_config_set_array_entry_quoting_and_arrays(session):
    s, b = session
    login(s)
    b.src.boot_path.write_text(LISTEN)
    out = say(s, "config set listen[0].port 5070")
    assert "-port = 5060\r\n+port = 5070" in out
    say(s, "y")
    assert 'proto = "udp"  # phones' in b.src.boot_text()  # comments survive
    say(s, 'config set core.server_header "123"')
    say(s, "y")
    say(s, 'config set proxy.domains ["a.example", "b.example"]')
    say(s, "y")
    import tomllib

    cfg = tomllib.loads(b.src.boot_text())
    assert cfg["listen"][0]["port"] == 5070
    assert cfg["core"]["server_header"] == "123"  # a string, as quoted
    assert cfg["proxy"]["domains"] == ["a.example", "b.example"]
    assert "listen has 1 entries" in say(s, "config set listen[1].port 1")
    assert "not a table" in say(s, "config set listen.port 5070")


def test_existing_error_does_not_block_other_edits(session):
    s, b = session
    login(s)
    b.src.boot_path.write_text(LISTEN.replace('proto = "udp"  # phones', 'proto = "udpx"'))
    out = say(s, "config set watchdog.timeout_s 30")
    assert "note: the file still has errors" in out and out.endswith("write it? [y/N] ")
    say(s, "y")
    assert "timeout_s = 30" in b.src.boot_text()
    out = say(s, 'config set listen[0].proto "udp"')  # fixing the bad line itself
    assert "note:" not in out
    say(s, "y")
    assert b.src.check_text(b.src.boot_text()) == []
    assert "not changed" in say(s, "config set watchdog.timeout_s 0")  # a new error: refused


def test_no_secret_on_screen(session):
    s, b = session
    login(s)
    b.src.boot_path.write_text(LISTEN)
    seen = say(s, "show config")
    seen += say(s, "config set management.password_hash")
    assert "(not shown): " in seen
    seen += say(s, hash_password("other", iterations=1000, salt=b"x" * 16))
    seen += say(s, "n")
    seen += say(s, "config set auth.secret")
    seen += say(s, "0123456789abcdefNEWSECRET")
    assert "a secret changes" in seen and seen.endswith("write it? [y/N] ")
    seen += say(s, "y")
    assert "0123456789abcdefNEWSECRET" in b.src.boot_text()
    assert "usage" in say(s, "config set watchdog.timeout_s")
    seen += say(s, "show config") + say(s, "config set watchdog.timeout_s 31")
    say(s, "n")
    for secret in (HASH, "0123456789abcdefSECRET", "0123456789abcdefNEWSECRET", "$1000$"):
        assert secret not in seen, secret


def test_config_restore_writes_last_known_good_after_confirmation(session):
    s, b = session
    login(s)
    b.lkg = None
    assert "no last-known-good" in say(s, "config restore")
    b.lkg = BOOT.replace("timeout_s = 15", "timeout_s = 25")
    out = say(s, "config restore")
    assert "-timeout_s = 15\r\n+timeout_s = 25" in out and out.endswith("write it? [y/N] ")
    assert "<hidden>" not in out or HASH not in out
    say(s, "y")
    assert b.src.boot_text() == b.lkg
    assert "already is the last-known-good" in say(s, "config restore")


def test_first_login_sets_the_password(tmp_path):
    stored = []
    s = ConsoleSession(Backend(tmp_path), lambda: stored[-1] if stored else "",
                       LoginGuard(3, 60), set_password=stored.append)
    out = s.greeting(0).decode()
    assert "no password is set yet" in out and "choose the console password: " in out
    assert "at least 8 characters" in say(s, "short")
    say(s, "longenough1")
    assert "the two entries differ" in say(s, "different1") and not s.logged_in
    say(s, "longenough1")
    out = say(s, "longenough1")
    assert "password set" in out and s.logged_in and out.endswith("sipedge> ")
    assert verify_password("longenough1", stored[-1]) and "longenough1" not in stored[-1]
    say(s, "logout")
    assert not s.logged_in and "password: " in say(s, "wrong")
    say(s, "longenough1")
    assert s.logged_in


async def test_ctl_reaches_supervisor_methods_and_errors_are_quiet(tmp_path, caplog):
    """`ctl watchdog.status` / `ctl config.apply` go to the supervisor (its RPC method table),
    anything else to the proxy; a failing call is an error line, not a logged traceback."""
    import asyncio
    import logging

    from sipedge.appliance.console_backend import SupervisorBackend
    from sipedge.appliance.fakes import FakeProbe, FakeProcess, FakeWatchdog
    from sipedge.appliance.supervisor import Supervisor

    (tmp_path / "boot").mkdir()
    src = BootConfigManager(tmp_path / "boot" / "sipedge.toml", tmp_path / "data")
    src.boot_path.write_text(BOOT.replace("[core]", '[core]\nctl_socket = "%s"'
                                          % (tmp_path / "nope.sock")))
    sup = Supervisor(src, watchdog=FakeWatchdog(), probe_factory=lambda c: FakeProbe(),
                     process_factory=lambda argv: FakeProcess(argv))
    task = asyncio.ensure_future(sup.run())
    await asyncio.sleep(0.1)
    backend = SupervisorBackend(sup, asyncio.get_running_loop(), src)
    s = ConsoleSession(backend, lambda: HASH, LoginGuard(3, 60))
    s.greeting(0)

    def console(*lines):
        out = ""
        for ln in lines:
            out += s.feed(ln.encode() + b"\r", 1.0).decode()
        return out

    with caplog.at_level(logging.INFO):
        out = await asyncio.to_thread(console, "s3cret", "ctl watchdog.status",
                                      "ctl config.apply", "ctl stats")
    assert '"device": "/dev/watchdog"' in out and '"queued": "reload"' in out
    assert "error: cannot reach" in out and "nope.sock" in out
    assert not [r for r in caplog.records if r.exc_info]  # no traceback for an RPC error
    sup.request("stop")
    await asyncio.wait_for(task, 5)
