"""Configuration from the SD card with a last-known-good copy on the data partition.

At boot and on reload the boot file (`/boot/sipedge.toml`) is validated:

- valid: it is what runs, and a byte-exact copy goes atomically to
  `<data>/config/last-good.toml`;
- invalid: its errors are kept for the panel and `config.errors`, and the last-known-good copy
  runs (validated again: a firmware update may have changed the schema), else the embedded
  default;
- absent: last-known-good, else the embedded default, with no error.

The boot file is never written except by `write_boot()` (an explicit console command), and then
atomically (temporary file in the same directory, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, ConfigIssue, load_default, load_file

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

    @property
    def errors(self) -> list[str]:
        return [str(i) for i in self.issues]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": None if self.path is None else str(self.path),
            "boot_file": str(self.boot_path),
            "boot_present": self.boot_present,
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
                 mounts: str = "/proc/mounts") -> None:
        self.boot_path = Path(boot_path)
        self.data_dir = Path(data_dir)
        self.lkg_path = self.data_dir / "config" / "last-good.toml"
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
                self._save_lkg(cfg)
                return self._remember(ConfigChoice(SOURCE_BOOT, self.boot_path, cfg,
                                                   self.boot_path, True))
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
        log.warning("running the embedded default config")
        return self._remember(ConfigChoice(SOURCE_DEFAULT, None, self.default_loader(),
                                           self.boot_path, present, issues))

    def _remember(self, choice: ConfigChoice) -> ConfigChoice:
        self.current = choice
        return choice

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
        """Factory reset: drop the last-known-good copy."""
        self.lkg_path.unlink(missing_ok=True)
