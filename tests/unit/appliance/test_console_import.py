"""`config import - SIZE SHA256`: a whole file over the console as base64 lines (the console
side of `tools/provision push`)."""

import base64
import hashlib

import pytest
from sipedge.appliance.console import EditError, FileReceiver
from test_console_shell import BOOT, login, say, session  # noqa: F401 - fixture


def lines_of(data: bytes, width: int = 76) -> list[str]:
    b64 = base64.b64encode(data).decode()
    return [b64[i:i + width] for i in range(0, len(b64), width)]


def start(s, data: bytes) -> str:
    return say(s, f"config import - {len(data)} {hashlib.sha256(data).hexdigest()}")


def test_receiver_checks_size_checksum_and_base64():
    data = "[core]\nworkers = 1\n\t# tab and ünïcode\n".encode()
    r = FileReceiver(len(data), hashlib.sha256(data).hexdigest())
    assert all(r.feed(line) is None for line in lines_of(data, 8))
    assert r.feed(".") == data
    r = FileReceiver(len(data), "0" * 64)
    for line in lines_of(data):
        r.feed(line)
    with pytest.raises(EditError, match="sha256"):
        r.feed(".")
    with pytest.raises(EditError, match="more than the announced 3 bytes"):
        FileReceiver(3, "0" * 64).feed(lines_of(data)[0])
    with pytest.raises(EditError, match="not base64"):
        FileReceiver(3, "0" * 64).feed("**not base64**")
    with pytest.raises(EditError, match="cancelled"):
        FileReceiver(3, "0" * 64).feed("")
    bad = b"\xff\xfe"
    r = FileReceiver(2, hashlib.sha256(bad).hexdigest())
    r.feed(lines_of(bad)[0])
    with pytest.raises(EditError, match="not UTF-8"):
        r.feed(".")


def test_import_file_over_console_diff_confirm_write(session):  # noqa: F811
    s, b = session
    login(s)
    new = BOOT.replace("timeout_s = 15", "timeout_s = 45\t# a tab survives").encode()
    out = start(s, new)
    assert "send the file as base64 lines" in out and not out.endswith("sipedge> ")
    assert not s.editor.echo
    for line in lines_of(new, 20):
        assert say(s, line) == "\r\n"  # no echo, no prompt: just the acknowledgement
    out = say(s, ".")
    assert "+timeout_s = 45\t# a tab survives" in out and out.endswith("write it? [y/N] ")
    assert s.editor.echo and not any("timeout" in h for h in s.editor.history)
    assert "written" in say(s, "y")
    assert b.src.boot_text() == new.decode()
    assert "no change" in (start(s, new) + "".join(say(s, x) for x in lines_of(new) + ["."]))


def test_import_refuses_invalid_damaged_or_cancelled(session):  # noqa: F811
    s, b = session
    login(s)
    bad = BOOT.replace("timeout_s = 15", "timeout_s = 0").encode()
    start(s, bad)
    for line in lines_of(bad):
        say(s, line)
    out = say(s, ".")
    assert "not imported, the file is invalid" in out and "watchdog.timeout_s" in out
    assert out.endswith("sipedge> ") and b.src.boot_text() == BOOT
    good = BOOT.replace("timeout_s = 15", "timeout_s = 20").encode()
    say(s, f"config import - {len(good)} {'a' * 64}")
    for line in lines_of(good):
        say(s, line)
    assert "sha256 does not match" in say(s, ".") and b.src.boot_text() == BOOT
    start(s, good)
    say(s, lines_of(good)[0])
    assert "cancelled" in say(s, "") and s.editor.echo
    assert "usage: config import - SIZE SHA256" in say(s, "config import - x y")
    assert "unknown command" not in say(s, "status")  # back in the shell


def test_empty_password_line_only_prompts_again(session):  # noqa: F811
    s, _ = session
    for _ in range(5):  # pressing Enter to wake a serial line never locks the console
        assert say(s, "").endswith("password: ")
    assert s.guard.failures == 0
    login(s)
