"""Serial management console: a sans-IO line editor and shell, plus the tty adapter.

`ConsoleSession.feed(data, now) -> bytes` is the whole console: login with lock-out, line
editing (backspace, Ctrl-U, Ctrl-C, Ctrl-D, left/right, history with up/down), commands and
confirmations. It talks to the box only through a `ConsoleBackend`. `SerialConsole` runs a
session on a tty (the board's serial port, or a pty in the tests).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import select
import shlex
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import EdgeError
from ..config.edit import EditError, mask_secrets, secret_values, set_value
from .auth import LoginGuard, verify_password

log = logging.getLogger("sipedge.appliance.console")

PROMPT = "sipedge> "
BAUD = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400,
        57600: termios.B57600, 115200: termios.B115200}

HELP = """\
commands:
  status                    supervisor and proxy state
  show config               the boot config file (secrets hidden)
  show errors               problems of the running config choice
  config check              validate the boot config file now
  config set KEY VALUE      change one setting (validated, diff, confirm, atomic write);
                            KEY as in the errors: core.workers, listen[0].port;
                            VALUE as TOML ("123" is a string, [1, 2] an array) or plain text
  config set KEY            for a secret (auth.secret, management.password_hash):
                            asks for the value without echo
  config restore            last-known-good back to the boot file (diff, confirm)
  config import             take the sipedge.toml found on a USB stick / SD card
  config import - SIZE SHA256
                            take a whole file sent here as base64 lines, then '.'
  apply                     re-read the config and restart the proxy if it changed
  restart [INSTANCE]        restart the proxy (with [instances]: that one, default the first)
  reload routes             reload the routing script / table
  ctl METHOD [k=v ...]      any sipedgectl RPC method (instance=NAME: that instance's)
  logs [N]                  last N log lines (default 20)
  update ...                firmware updates (update status | check | install SRC)
  reboot                    reboot the box (asks first)
  factory-reset             default config, forget last-known-good (asks first)
  help, logout"""


class ConsoleBackend(Protocol):
    def status(self) -> dict[str, Any]: ...

    def boot_text(self) -> str: ...

    def check_text(self, text: str) -> list[str]: ...

    def write_boot(self, text: str) -> None: ...

    def config_errors(self) -> dict[str, Any]: ...

    def apply(self) -> None: ...

    def rpc(self, method: str, params: dict[str, Any]) -> Any: ...

    def logs(self, n: int) -> list[str]: ...

    def reboot(self) -> None: ...

    def factory_reset(self) -> None: ...

    def lkg_text(self) -> str | None:
        """The last-known-good config (None: none saved yet)."""
        ...

    def media_config(self) -> Any:
        """The `hotplug.MediaConfig` offered by removable media, or None."""
        ...


# ------------------------------------------------------------------ TOML editing
# (sipedge.config.edit: tomlkit, so the operator's comments and layout survive)

hide_secrets = mask_secrets


def _is_secret(dotted: str) -> bool:
    """Is the key a secret of the schema (`auth.secret`, `tls[0].private_key`, ...)?"""
    from ..config.edit import parse_key, secret_keys

    try:
        path = [p for p in parse_key(dotted) if not isinstance(p, int)]
    except EditError:
        return False
    if len(path) > 2 and path[0] == "instances":  # instances.<name>.auth.secret
        del path[1]
    names = {tuple(k for k in key.split(".") if k != "*") for key in secret_keys()}
    return tuple(path) in names


def _issue_key(issue: str) -> str:
    """A config error without its line number, to tell old errors from new ones."""
    return re.sub(r":\d+:", ":", issue, count=1)


# ------------------------------------------------------------------ line editor


class LineEditor:
    """Bytes in, (echo bytes, finished lines) out. ANSI/VT100 keys; history of 50 lines."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.pos = 0
        self.history: list[str] = []
        self.hist_pos = 0
        self.echo = True
        self._esc = ""
        self._last_cr = False

    def reset(self) -> None:
        self.buf, self.pos, self._esc = [], 0, ""
        self.hist_pos = len(self.history)

    def _redraw_tail(self) -> str:
        tail = "".join(self.buf[self.pos:])
        return tail + " " + "\b" * (len(tail) + 1)

    def _replace(self, text: str) -> str:
        out = "\b" * self.pos + " " * len(self.buf) + "\b" * len(self.buf)
        self.buf, self.pos = list(text), len(text)
        return out + text

    def feed(self, data: bytes) -> tuple[str, list[str | None]]:
        """Returns echo text and completed lines (None means Ctrl-D on an empty line)."""
        out: list[str] = []
        lines: list[str | None] = []
        for ch in data.decode("utf-8", "replace"):
            if self._esc:
                self._esc += ch
                if len(self._esc) == 2 and ch != "[":
                    self._esc = ""
                elif len(self._esc) >= 3 and (ch.isalpha() or ch == "~" or len(self._esc) > 6):
                    out.append(self._key(self._esc[2:]))
                    self._esc = ""
                continue
            if ch == "\n" and self._last_cr:
                self._last_cr = False
                continue
            self._last_cr = ch == "\r"
            if ch in "\r\n":
                line = "".join(self.buf)
                out.append("\r\n")
                if self.echo and line.strip() and (not self.history or
                                                   self.history[-1] != line):
                    self.history = (self.history + [line])[-50:]
                self.reset()
                lines.append(line)
            elif ch == "\x1b":
                self._esc = ch
            elif ch in "\x7f\x08":
                if self.pos > 0:
                    self.pos -= 1
                    del self.buf[self.pos]
                    if self.echo:
                        out.append("\b" + self._redraw_tail())
            elif ch == "\x15":  # Ctrl-U
                if self.echo:
                    out.append(self._replace(""))
                self.reset()
            elif ch == "\x03":  # Ctrl-C
                out.append("^C\r\n")
                self.reset()
                lines.append("")
            elif ch == "\x04":  # Ctrl-D
                if not self.buf:
                    lines.append(None)
            elif ch >= " " and len(self.buf) < 1024:
                self.buf.insert(self.pos, ch)
                self.pos += 1
                if self.echo:
                    out.append(ch + (self._redraw_tail() if self.pos < len(self.buf) else ""))
        return "".join(out), lines

    def _key(self, code: str) -> str:
        if not self.echo:
            return ""
        if code == "D" and self.pos > 0:
            self.pos -= 1
            return "\b"
        if code == "C" and self.pos < len(self.buf):
            self.pos += 1
            return self.buf[self.pos - 1]
        if code == "B" and self.hist_pos >= len(self.history):
            return ""  # already below the newest entry: keep what is typed
        if code in ("A", "B") and self.history:
            if code == "A":
                self.hist_pos = max(0, self.hist_pos - 1)
            else:
                self.hist_pos = min(len(self.history), self.hist_pos + 1)
            text = self.history[self.hist_pos] if self.hist_pos < len(self.history) else ""
            return self._replace(text)
        return ""


# ------------------------------------------------------------------ session


class ConsoleSession:
    """One console: login, then the shell. `feed(data, now)` returns what to send back."""

    def __init__(self, backend: ConsoleBackend, password_hash: Callable[[], str],
                 guard: LoginGuard, idle_logout_s: float = 600.0,
                 set_password: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.password_hash = password_hash
        # First way in: with no password anywhere, whoever is at the serial port (physical
        # presence) chooses one; `set_password` stores its hash (on /data). None: disabled.
        self.set_password = set_password
        self._new_password: str | None = None  # first entry, awaiting the repetition
        self._secret_key: str | None = None  # `config set SECRET`: the value comes unechoed
        self.guard = guard
        self.idle_logout_s = idle_logout_s
        self.editor = LineEditor()
        self.logged_in = False
        self.closed = False
        self._pending: tuple[str, Callable[[], str]] | None = None  # (expected answer, action)
        self._receiver: FileReceiver | None = None  # `config import -` in progress
        self.last_input = 0.0
        from .ota_console import UpdateCommands  # issue 12: `update` commands
        self.updates = UpdateCommands(lambda m, p: self.backend.rpc(m, p), self._confirm)

    def greeting(self, now: float) -> bytes:
        self.last_input = now
        return self._login_prompt(now).encode()

    def _login_prompt(self, now: float) -> str:
        self.editor.echo = False
        if not self.password_hash():
            if self.set_password is None:
                return "console disabled: set [management] password_hash\r\n"
            if self._new_password is None:
                return ("sipedge management console: no password is set yet.\r\n"
                        "choose the console password: ")
            return "repeat it: "
        left = self.guard.locked(now)
        if left:
            return f"locked for {left:.0f}s\r\n"
        return "sipedge management console\r\npassword: "

    def tick(self, now: float) -> bytes:
        """Call periodically: idle logout, update progress."""
        if self.logged_in:
            try:
                text = self.updates.tick(now)
            except Exception:  # boundary: progress is best effort
                log.exception("update progress failed")
                text = ""
            if text:
                return ("\r\n" + self._crlf(text) + PROMPT).encode("utf-8", "replace")
        if self.logged_in and now - self.last_input > self.idle_logout_s:
            self.logged_in = False
            self._pending = None
            self._receiver = None
            self.editor.reset()
            return ("\r\nidle timeout, logged out\r\n" + self._login_prompt(now)).encode()
        return b""

    def feed(self, data: bytes, now: float) -> bytes:
        self.last_input = now
        echo, lines = self.editor.feed(data)
        out = [echo]
        for line in lines:
            if line is None:
                if self.logged_in:
                    out.append(self._logout(now))
                continue
            out.append(self._line(line, now))
        return "".join(out).encode("utf-8", "replace")

    def _logout(self, now: float) -> str:
        self.logged_in = False
        self._pending = None
        self._receiver = None
        return "logged out\r\n" + self._login_prompt(now)

    def _line(self, line: str, now: float) -> str:
        if not self.logged_in:
            return self._login(line, now)
        if self._receiver is not None:
            return self._receive_line(line)
        if self._secret_key is not None:  # the value of a secret, typed without echo
            key, self._secret_key = self._secret_key, None
            self.editor.echo = True
            if not line:
                return "cancelled\r\n" + PROMPT
            text = self._config_set(key, json.dumps(line))
            if self._pending is not None:
                return text.replace("\r\n", "\n").replace("\n", "\r\n")
            return self._crlf(text) + PROMPT
        if self._pending is not None:
            answer, action = self._pending
            self._pending = None
            if line.strip().lower() == answer:
                return self._crlf(action()) + PROMPT
            return "cancelled\r\n" + PROMPT
        try:
            text = self.run(line.strip())
        except (EdgeError, OSError, ValueError, TimeoutError) as exc:
            # an expected failure (RPC error, unknown method, proxy down): said, not a bug
            log.info("console command failed command=%s error=%s", line.split()[0], exc)
            text = f"error: {exc}"
        except Exception as exc:  # boundary: one failing command must not kill the console
            log.exception("console command failed command=%s", line.split()[0])
            text = f"error: {exc}"
        if text == "\x00logout":
            return self._logout(now)
        if (self._pending is not None or self._secret_key is not None
                or self._receiver is not None):  # a question / file data: answered on the same line
            return text.replace("\r\n", "\n").replace("\n", "\r\n")
        return self._crlf(text) + PROMPT

    def _login(self, password: str, now: float) -> str:
        stored = self.password_hash()
        if not stored:
            if self.set_password is None:
                return self._login_prompt(now)
            return self._first_password(password, now)
        if self.guard.locked(now) or not password:  # Enter to wake the line is no attempt
            return self._login_prompt(now)
        ok = verify_password(password, stored)
        self.guard.record(ok, now)
        if not ok:
            log.warning("console login failed failures=%d", self.guard.failures)
            return "login incorrect\r\n" + self._login_prompt(now)
        log.info("console login")
        self.logged_in = True
        self.editor.echo = True
        return "type 'help' for commands\r\n" + PROMPT

    def _first_password(self, password: str, now: float) -> str:
        if self._new_password is None:
            if not password:  # Enter on its own: just ask again
                return self._login_prompt(now)
            if len(password) < 8:
                return "at least 8 characters, please\r\n" + self._login_prompt(now)
            self._new_password = password
            return self._login_prompt(now)
        first, self._new_password = self._new_password, None
        if password != first:
            return "the two entries differ\r\n" + self._login_prompt(now)
        from .auth import hash_password

        assert self.set_password is not None
        self.set_password(hash_password(password))
        log.warning("console password set on first login (stored hashed on the data "
                    "partition)")
        self.logged_in = True
        self.editor.echo = True
        return ("password set (stored hashed on /data; [management] password_hash in "
                "sipedge.toml overrides it)\r\ntype 'help' for commands\r\n" + PROMPT)

    @staticmethod
    def _crlf(text: str) -> str:
        if not text:
            return ""
        return text.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"

    def _confirm(self, question: str, answer: str, action: Callable[[], str]) -> str:
        self._pending = (answer, action)
        return f"{question} [{answer}/N] "

    # -------------------------------------------------------------- commands

    def run(self, line: str) -> str:
        if not line:
            return ""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return f"error: {exc}"
        cmd, args = words[0], words[1:]
        if cmd in ("help", "?"):
            return HELP
        if cmd in ("logout", "exit", "quit"):
            return "\x00logout"
        if cmd == "status":
            return self._status()
        if cmd == "show" and args == ["config"]:
            return hide_secrets(self.backend.boot_text()).rstrip("\n")
        if cmd == "show" and args == ["errors"]:
            errs = self.backend.config_errors()
            lines = [f"running: {errs['source']} {errs.get('path') or '(embedded default)'}"]
            return "\n".join(lines + (errs["errors"] or ["no errors"]))
        if cmd == "config" and args == ["check"]:
            issues = self.backend.check_text(self.backend.boot_text())
            return "\n".join(issues) if issues else "config OK"
        if cmd == "config" and len(args) == 2 and args[0] == "set":
            if not _is_secret(args[1]):
                return "usage: config set KEY VALUE (a secret's value is asked for unechoed)"
            self._secret_key = args[1]
            self.editor.echo = False
            return f"new value of {args[1]} (not shown): "
        if cmd == "config" and args[:1] == ["set"]:
            m = re.match(r"\s*config\s+set\s+(\S+)\s+(.+)$", line)
            if not m:
                return "usage: config set KEY VALUE (e.g. listen[0].port 5070)"
            # the value as typed, quotes included: "123" is a string, [1, 2] an array
            return self._config_set(m.group(1), m.group(2))
        if cmd == "config" and args == ["restore"]:
            return self._config_restore()
        if cmd == "config" and args[:2] == ["import", "-"]:
            return self._config_receive(args[2:])
        if cmd == "config" and args == ["import"]:
            return self._config_import()
        if cmd == "apply":
            self.backend.apply()
            return "applying: the supervisor re-reads the config"
        if cmd == "restart" and len(args) <= 1:
            try:
                res = self.backend.restart(args[0] if args else None)
            except ValueError as exc:
                return f"error: {exc}"
            return f"restarting {res['instance']}"
        if cmd == "reload" and args == ["routes"]:
            return _fmt(self.backend.rpc("route.reload", {}))
        if cmd == "ctl" and args:
            return _fmt(self.backend.rpc(args[0], _params(args[1:])))
        if cmd == "logs":
            n = int(args[0]) if args and args[0].isdigit() else 20
            return "\n".join(self.backend.logs(min(n, 500))) or "(no log lines)"
        if cmd == "update":
            return self.updates.run(args)
        if cmd == "reboot":
            return self._confirm("reboot now?", "y", self._do_reboot)
        if cmd == "factory-reset":
            return self._confirm("reset the config to the factory default and forget "
                                 "last-known-good? type 'yes' to confirm", "yes",
                                 self._do_factory_reset)
        return f"unknown command: {line} (type 'help')"

    def _status(self) -> str:
        st = self.backend.status()
        health = st.get("health") or {}
        lines = [f"state:    {st.get('state')} (panel {st.get('panel')})",
                 f"proxy:    pid {st.get('pid')}, restarts {st.get('restarts')}, "
                 f"crashes {st.get('crashes')}",
                 f"config:   {st['config']['source']} {st['config']['path'] or ''} "
                 f"({st['config']['errors']} errors)",
                 f"health:   {'ok' if health.get('ok') else health.get('detail', '-')}, "
                 f"lag {health.get('loop_lag_ms', '-')} ms",
                 f"watchdog: {'armed' if st['watchdog']['armed'] else 'off'}, "
                 f"{st['watchdog']['pets']} pets",
                 f"version:  {st.get('version')}, slot {st.get('slot') or '-'}"]
        if st.get("box_uptime_s") is not None:
            up = int(st["box_uptime_s"])
            lines.append(f"uptime:   {up // 86400}d {up % 86400 // 3600:02d}:"
                         f"{up % 3600 // 60:02d} (box)")
        if st.get("addresses"):
            lines.append("address:  " + ", ".join(st["addresses"]))
        nums = st.get("numbers") or {}
        if any(v is not None for v in nums.values()):
            lines.append("traffic:  " + ", ".join(
                f"{k} {'-' if v is None else v}" for k, v in nums.items()))
        if st.get("problem"):
            lines.append(f"problem:  {st['problem']}")
        insts = st.get("instances") or {}
        if len(insts) > 1 or (insts and "default" not in insts):  # [instances]: one line each
            for name, i in insts.items():
                h = i.get("health") or {}
                lines.append(f"instance: {name:<10} {i['state']:<8} pid {i.get('pid')}, "
                             f"restarts {i.get('restarts')}, "
                             f"{'required' if i.get('required') else 'optional'}, "
                             f"{' '.join(i.get('listen') or [])}"
                             + (f", {h.get('detail')}" if h and not h.get("ok") else "")
                             + (f" - {i['problem']}" if i.get("problem") else ""))
        security = getattr(self.backend, "security", None)
        sec = security() if security is not None else None
        if sec:
            lines.append(f"security: {sec['blocked_now']} sources blocked now "
                         f"({', '.join(sec['sample']) or '-'}), {sec['blocks_total']} blocks "
                         f"and {sec['unblocks_total']} unblocks since start")
        wd = st["watchdog"]
        if wd.get("previous_reset"):
            lines.append(f"watchdog: {wd['previous_reset']}")
        if wd.get("reset_suppressed"):
            lines.append("watchdog: reset suppressed, max_resets reached: "
                         f"{wd['reset_suppressed']}")
        return "\n".join(lines)

    def _config_set(self, key: str, value: str) -> str:
        old = self.backend.boot_text()
        try:
            new = set_value(old, key, value)
        except EditError as exc:
            return f"error: {exc}"
        if new == old:
            return "no change"
        # Refuse what this change breaks; errors the file already had (e.g. a bad line in
        # another [[listen]]) do not block fixing things one key at a time.
        before = {_issue_key(i) for i in self.backend.check_text(old)} if old else set()
        issues = self.backend.check_text(new)
        added = [i for i in issues if _issue_key(i) not in before]
        if added:
            return "not changed, the result would be invalid:\n" + "\n".join(added)
        note = ""
        if issues:
            note = ("note: the file still has errors this change does not touch:\n"
                    + "\n".join(issues) + "\n")
        return self._diff_and_write(old, new, "sipedge.toml (new)", note)

    def _diff_and_write(self, old: str, new: str, label: str, note: str = "") -> str:
        """Show the change (secrets hidden on both sides), then ask before writing."""
        a, b = mask_secrets(old), mask_secrets(new)
        diff = "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(),
                                               "sipedge.toml (now)", label, lineterm="", n=1))
        if secret_values(old) != secret_values(new):
            diff += ("\n" if diff else "") + "(a secret changes; its value is not shown)"

        def write() -> str:
            self.backend.write_boot(new)
            return "written; type 'apply' to use it"

        return diff + "\n" + note + self._confirm("write it?", "y", write)

    def _config_restore(self) -> str:
        lkg = self.backend.lkg_text()
        if lkg is None:
            return "no last-known-good config saved yet"
        old = self.backend.boot_text()
        if lkg == old:
            return "the boot file already is the last-known-good config"
        return self._diff_and_write(old, lkg, "last-known-good")

    def _config_import(self) -> str:
        offer = self.backend.media_config()
        if offer is None:
            return "no config on removable media"
        if not offer.valid:
            return f"the config on {offer.devnode} is invalid:\n" + "\n".join(offer.issues)
        old = self.backend.boot_text()
        if offer.text == old:
            return "no change"
        issues = self.backend.check_text(offer.text)
        if issues:
            return "not imported:\n" + "\n".join(issues)
        return self._diff_and_write(old, offer.text, f"{offer.devnode} sipedge.toml")

    def _config_receive(self, args: list[str]) -> str:
        """`config import - SIZE SHA256`: the file follows as base64 lines (echo off, kept out
        of the history), then a line `.`; an empty line or Ctrl-C cancels. Used by
        `tools/provision push`; a person can paste `base64 sipedge.toml` output too."""
        if len(args) != 2 or not args[0].isdigit() or not re.fullmatch(r"[0-9a-fA-F]{64}", args[1]):
            return "usage: config import - SIZE SHA256 (size in bytes, sha256 in hex)"
        if int(args[0]) > FileReceiver.MAX_BYTES:
            return f"error: a config file is at most {FileReceiver.MAX_BYTES} bytes"
        self._receiver = FileReceiver(int(args[0]), args[1].lower())
        self.editor.echo = False
        return "send the file as base64 lines, then a line with '.' (empty line cancels)\n"

    def _receive_line(self, line: str) -> str:
        receiver = self._receiver
        assert receiver is not None
        try:
            data = receiver.feed(line.strip())
        except EditError as exc:
            self._receiver = None
            self.editor.echo = True
            return self._crlf(f"not imported: {exc}") + PROMPT
        if data is None:
            return ""  # more lines to come; the editor's CRLF acknowledges this one
        self._receiver = None
        self.editor.echo = True
        text = data.decode("utf-8")
        old = self.backend.boot_text()
        if text == old:
            return self._crlf("no change") + PROMPT
        issues = self.backend.check_text(text)
        if issues:
            return self._crlf("not imported, the file is invalid:\n" + "\n".join(issues)) + PROMPT
        diff = difflib.unified_diff(old.splitlines(), text.splitlines(), "sipedge.toml (now)",
                                    "sipedge.toml (received)", lineterm="", n=1)

        def write() -> str:
            self.backend.write_boot(text)
            return "written; type 'apply' to use it"

        question = self._confirm("write it?", "y", write)
        return self._crlf("\n".join(diff)) + question

    def _do_reboot(self) -> str:
        self.backend.reboot()
        return "rebooting"

    def _do_factory_reset(self) -> str:
        self.backend.factory_reset()
        return "factory default written; applying"


class FileReceiver:
    """Collects base64 lines until `.`; checks the announced size and sha256 and UTF-8.
    `feed(line)` returns None while more is expected, the bytes when complete, or raises
    EditError (cancelled, bad base64, too long, wrong size or checksum)."""

    MAX_BYTES = 1 << 20

    def __init__(self, size: int, sha256: str) -> None:
        self.size = size
        self.sha256 = sha256
        self.parts: list[bytes] = []
        self.received = 0

    def feed(self, line: str) -> bytes | None:
        import base64
        import binascii
        import hashlib

        if not line:
            raise EditError("cancelled")
        if line != ".":
            try:
                chunk = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                raise EditError(f"line {len(self.parts) + 1} is not base64") from None
            self.received += len(chunk)
            if self.received > self.size:
                raise EditError(f"more than the announced {self.size} bytes")
            self.parts.append(chunk)
            return None
        data = b"".join(self.parts)
        if len(data) != self.size:
            raise EditError(f"received {len(data)} bytes, announced {self.size}")
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise EditError("sha256 does not match: the transfer was damaged")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EditError(f"not UTF-8 text (byte {exc.start})") from None
        return data


def _params(args: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, a in enumerate(args):
        k, eq, v = a.partition("=")
        if not eq:
            params[str(i)] = a
            continue
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v
    return params


def _fmt(result: Any) -> str:
    return json.dumps(result, indent=2, sort_keys=True)


# ------------------------------------------------------------------ log ring


# ------------------------------------------------------------------ tty adapter


class SerialConsole:
    """Runs a session on a tty in a thread: raw mode, baud rate, bounded select loop."""

    def __init__(self, device: str | Path, session: ConsoleSession, baud: int = 115200,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.device = str(device)
        self.session = session
        self.baud = baud
        self.clock = clock or time.monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            speed = BAUD.get(self.baud, termios.B115200)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error as exc:
            log.warning("console tty setup failed device=%s error=%s", self.device, exc)
        self._fd = fd
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        log.info("management console device=%s baud=%d", self.device, self.baud)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _run(self) -> None:
        try:
            self._write(self.session.greeting(self.clock()))
            while not self._stop.is_set():
                r, _, _ = select.select([self._fd], [], [], 0.2)
                now = self.clock()
                if r:
                    try:
                        data = os.read(self._fd, 1024)
                    except OSError:
                        data = b""
                    if not data:  # hang-up on a pty; a real UART never returns EOF
                        self._stop.wait(0.2)
                        continue
                    self._write(self.session.feed(data, now))
                else:
                    self._write(self.session.tick(now))
        except OSError as exc:
            log.error("console stopped device=%s error=%s", self.device, exc)
        finally:
            os.close(self._fd)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
