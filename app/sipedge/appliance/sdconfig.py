"""Configuration from the SD card with a last-known-good copy on the data partition.

At boot and on reload the boot file (`/boot/sipedge.toml`) is validated:

- valid: it is what runs. It becomes last-known-good (a byte-exact copy, written atomically to
  `<data>/config/last-good.toml`) only once the proxy has run healthy on it for
  `[supervisor] config_good_after_s` (`promote()`, called by the supervisor), as an OTA slot
  is marked good. A config whose proxy never gets healthy is rolled back (`reject()`): its
  hash and the reason go to `<data>/config/rejected.json`, and the same file is not tried
  again (not after a reboot either) until it changes;
- invalid (or rejected): its errors are kept for the panel and `config.errors`, and the
  last-known-good copy runs (validated again: a firmware update may have changed the schema),
  else the factory default;
- absent: last-known-good, else the factory default, with no error.

The factory default (`factory_path`: the shipped `sipedge.toml`, also what `factory-reset`
writes) listens on every address and keeps a console way in; the embedded default (loopback
only) is used only where no factory file is given (`make run` on a PC).

The boot file is never written except by `write_boot()` (an explicit console command), and then
atomically (temporary file in the same directory, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, ConfigIssue, load_default, load_file
from .rejected import read_record, rejected_path, rejects, text_sha

log = logging.getLogger("sipedge.appliance.sdconfig")

SOURCE_BOOT = "boot"
SOURCE_LKG = "last-known-good"
SOURCE_DEFAULT = "default"


@dataclass(frozen=True)
class ConfigChoice:
    """The configuration to run and why."""

    source: str
    path: Path | None  # None: the embedded default (run `sipedge` without --config)
    config: Config
    boot_path: Path
    boot_present: bool
    issues: tuple[ConfigIssue, ...] = field(default=())
    proven: bool = True  # False: a boot config on trial, not yet last-known-good


    @property
    def errors(self) -> list[str]:
        return [str(i) for i in self.issues]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": None if self.path is None else str(self.path),
            "boot_file": str(self.boot_path),
            "boot_present": self.boot_present,
            "proven": self.proven,
            "errors": self.errors,
            "issues": [{"file": i.file, "line": i.line, "key": i.key, "reason": i.reason}
                       for i in self.issues],
        }


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a power cut leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    except OSError:  # some file systems (FAT on some kernels) refuse fsync on directories
        pass
    finally:
        os.close(dfd)


def mount_point(path: Path, mounts: str = "/proc/mounts") -> Path | None:
    """The mount point holding `path` (longest matching prefix in /proc/mounts)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    best: Path | None = None
    target = path.resolve()
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        mp = Path(fields[1].replace("\\040", " "))
        if (target == mp or mp in target.parents) and (best is None or
                                                       len(mp.parts) > len(best.parts)):
            best = mp
    return best


def remount(mp: Path, mode: str) -> None:
    """`mount -o remount,<mode> <mp>` (the boot partition is mounted read-only)."""
    res = subprocess.run(["mount", "-o", f"remount,{mode}", str(mp)], capture_output=True,
                         text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise OSError(errno.EROFS, f"remount {mode} {mp}: {res.stderr.strip()}")


class BootConfigManager:
    """`ConfigSource` port: the SD-card file with last-known-good fallback."""

    def __init__(self, boot_path: str | Path, data_dir: str | Path, *,
                 loader: Callable[[Path], Config] = load_file,
                 default_loader: Callable[[], Config] = load_default,
                 remount: Callable[[Path, str], None] = remount,
                 mounts: str = "/proc/mounts",
                 factory_path: str | Path | None = None) -> None:
        self.boot_path = Path(boot_path)
        self.data_dir = Path(data_dir)
        self.lkg_path = self.data_dir / "config" / "last-good.toml"
        self.rejected_path = rejected_path(self.data_dir)
        self.factory_path = None if factory_path is None else Path(factory_path)
        self.loader = loader
        self.default_loader = default_loader
        self.remount = remount
        self.mounts = mounts
        self.current: ConfigChoice | None = None

    def select(self) -> ConfigChoice:
        present = self.boot_path.exists()
        issues: tuple[ConfigIssue, ...] = ()
        if present:
            try:
                cfg = self.loader(self.boot_path)
            except ConfigError as exc:
                issues = tuple(exc.errors)
                log.error("boot config invalid file=%s errors=%d first=%s", self.boot_path,
                          len(issues), issues[0] if issues else "")
            else:
                for w in getattr(cfg, "warnings", ()):
                    log.warning("boot config: %s", w)
                rejected = self.rejected_reason(cfg.text)
                if rejected is None:
                    return self._remember(ConfigChoice(
                        SOURCE_BOOT, self.boot_path, cfg, self.boot_path, True,
                        proven=self.lkg_text() == cfg.text))
                issues = (ConfigIssue(str(self.boot_path), 0, "",
                                      f"rolled back to last-known-good: {rejected}"),)
                log.error("boot config was rolled back earlier file=%s reason=%s",
                          self.boot_path, rejected)
        if self.lkg_path.exists():
            try:
                cfg = self.loader(self.lkg_path)
            except ConfigError as exc:
                log.error("last-known-good config invalid file=%s first=%s", self.lkg_path,
                          exc.errors[0] if exc.errors else "")
            else:
                log.warning("running last-known-good config file=%s", self.lkg_path)
                return self._remember(ConfigChoice(SOURCE_LKG, self.lkg_path, cfg,
                                                   self.boot_path, present, issues))
        return self._remember(self._default(present, issues))

    def _default(self, present: bool, issues: tuple[ConfigIssue, ...]) -> ConfigChoice:
        if self.factory_path is not None:
            try:
                cfg = self.loader(self.factory_path)
            except (ConfigError, OSError) as exc:
                log.error("factory config unusable file=%s error=%s", self.factory_path, exc)
            else:
                log.warning("running the factory default config file=%s", self.factory_path)
                return ConfigChoice(SOURCE_DEFAULT, self.factory_path, cfg, self.boot_path,
                                    present, issues)
        log.warning("running the embedded default config")
        return ConfigChoice(SOURCE_DEFAULT, None, self.default_loader(), self.boot_path,
                            present, issues)

    def _remember(self, choice: ConfigChoice) -> ConfigChoice:
        self.current = choice
        return choice

    # ---------------------------------------------------------------- trial of a boot config

    def lkg_text(self) -> str | None:
        try:
            return self.lkg_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def promote(self, choice: ConfigChoice) -> bool:
        """The proxy ran healthy on `choice`: make it last-known-good. True if saved."""
        if choice.source != SOURCE_BOOT:
            return False
        self._save_lkg(choice.config)
        self.clear_rejected()
        return self.lkg_text() == choice.config.text

    def reject(self, choice: ConfigChoice, reason: str) -> ConfigChoice:
        """The proxy never got healthy on `choice`: remember that, select again (last-known-good
        or the factory default) and return the new choice."""
        record = {"sha256": text_sha(choice.config.text), "file": str(choice.path),
                  "reason": reason}
        try:
            self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.rejected_path, json.dumps(record).encode())
        except OSError as exc:
            log.error("cannot record the rolled-back config file=%s error=%s",
                      self.rejected_path, exc)
            self._rejected_mem = record
        log.error("config rolled back file=%s reason=%s", choice.path, reason)
        return self.select()

    _rejected_mem: dict[str, str] | None = None

    def rejected_reason(self, text: str) -> str | None:
        rec = self._rejected_mem
        if rec is None:
            rec = read_record(self.rejected_path)
        if rejects(rec, text):
            return str(rec.get("reason") or "the proxy did not become healthy on it")
        return None

    def clear_rejected(self) -> None:
        self._rejected_mem = None
        self.rejected_path.unlink(missing_ok=True)

    def _save_lkg(self, cfg: Config) -> None:
        data = cfg.text.encode("utf-8")
        try:
            if self.lkg_path.exists() and self.lkg_path.read_bytes() == data:
                return
            self.lkg_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.lkg_path, data)
            log.info("saved last-known-good config file=%s", self.lkg_path)
        except OSError as exc:
            log.error("cannot save last-known-good file=%s error=%s", self.lkg_path, exc)

    def check_text(self, text: str, source: str | None = None) -> list[ConfigIssue]:
        """Validate candidate text as if it were the boot file (no I/O besides the parse)."""
        from ..config import load_text

        try:
            load_text(text, source or str(self.boot_path))
        except ConfigError as exc:
            return list(exc.errors)
        return []

    def full_check(self, text: str, command: list[str] | None = None,
                   running: Any = None) -> list[str]:
        """What `sipedge --check-config` says of `text` as the boot file: the schema, then the
        routing script (loaded), the dispatcher list. Run as a child process: a routing script's
        top-level code never runs inside the supervisor. Then the start-time checks
        (appliance/startcheck.py) against this box now; `running` is the config of the proxy
        the candidate would replace, whose ports and files are not counted as taken."""
        issues = [str(i) for i in self.check_text(text)]
        if issues:
            return issues
        import sys
        import tempfile

        argv = list(command or [sys.executable, "-m", "sipedge"])
        # a copy elsewhere (the boot partition is read-only) whose relative paths still
        # resolve against the boot file's directory
        with tempfile.TemporaryDirectory(prefix="sipedge-check-") as tmp:
            cand = Path(tmp) / self.boot_path.name
            cand.write_text(_with_base(text, self.boot_path.parent), encoding="utf-8")
            try:
                res = subprocess.run(argv + ["--check-config", str(cand)], capture_output=True,
                                     text=True, timeout=120, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return [f"{self.boot_path}: the check could not run: {exc}"]
        if res.returncode == 0:
            from ..config import load_text
            from .startcheck import start_problems

            return [str(i) for i in start_problems(load_text(text, str(self.boot_path)), running)]
        lines = [ln.replace(str(cand), str(self.boot_path))
                 for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        return lines or [f"{self.boot_path}: check failed (status {res.returncode})"]

    def boot_text(self) -> str:
        return self.boot_path.read_text(encoding="utf-8")

    def write_boot(self, text: str) -> None:
        """Replace the boot file atomically. Callers validate first (`check_text`).

        The boot partition is normally mounted read-only: on EROFS it is remounted
        read-write for the write and read-only again afterwards.
        """
        data = text.encode("utf-8")
        try:
            atomic_write(self.boot_path, data)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            mp = mount_point(self.boot_path, self.mounts)
            if mp is None:
                raise
            self.remount(mp, "rw")
            try:
                atomic_write(self.boot_path, data)
            finally:
                self.remount(mp, "ro")
        log.warning("boot config rewritten file=%s", self.boot_path)

    def forget_lkg(self) -> None:
        """Factory reset: drop the last-known-good copy (and any rolled-back record)."""
        self.lkg_path.unlink(missing_ok=True)
        self.clear_rejected()


def _with_base(text: str, base: Path) -> str:
    """`text` with a relative `[routing] script` made absolute against `base`."""
    import tomllib

    try:
        script = tomllib.loads(text).get("routing", {}).get("script", "")
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(script, str) or not script or Path(script).is_absolute() \
            or script.startswith("sipedge:"):
        return text
    from ..config.edit import set_value

    return set_value(text, "routing.script", json.dumps(str(base / script)))
