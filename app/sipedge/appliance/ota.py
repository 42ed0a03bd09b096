"""Field updates on the box: bundle checks, RAUC install with progress, the trial boot
(mark good after health, reboot when it never gets healthy), rollback reports, status.

Split as the rest of the appliance:

- `TrialPolicy` is sans-IO: boot facts in, `tick(now, state, healthy_for)` -> actions
  (`MarkGood`, `Reboot(reason)`); `boot_report()` says whether the boot is a rollback.
  Unit-tested with a number for `now`.
- `check_bundle()` refuses a bad bundle *before anything is written*: the signature and
  the manifest with `rauc info --keyring` (unsigned, wrongly signed, truncated or a
  forged manifest fail here), the `compatible`, the version (a downgrade only when
  forced), then the whole image streamed out of the bundle (`unsquashfs -cat`) against the
  signed SHA-256 and size of the manifest (a flipped payload byte fails here; `rauc info`
  does not read the payload of a verity bundle, dm-verity would only notice while writing).
- `OtaManager` is the runtime: it owns the state file on /data (`ota/state.json`: the
  pending install, the last install, the last rollback, the last channel check), runs
  `rauc install` in a thread and parses its percent lines, and serves `update.*` RPC.

The bootloader does the counting (GRUB's or U-Boot's try counter per slot, RAUC's
backends): a slot that is not marked good within its tries is left for the other one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import EdgeError
from .ota_channel import ChannelError, Version, in_window, parse_window

log = logging.getLogger("sipedge.appliance.ota")

RELEASE_FILE = Path("/etc/sipedge-release")
KEYRING = Path("/etc/rauc/keyring.pem")
SYSTEM_CONF = Path("/etc/rauc/system.conf")
INDEX_KEY = Path("/etc/rauc/index.pub")
FW_ENV_CONFIG = Path("/etc/fw_env.config")
# Free space an install needs besides a download on /data: the update state file, RAUC's
# status file (/data/rauc.status), the registrar's database and the logs keep working
FREE_MARGIN = 16 << 20
# RAUC switches slots by rewriting the bootloader environment (grub-editenv writes a new
# copy and renames it; fw_setenv rewrites uboot.env): that much free on its file system
BOOT_ENV_FREE = 64 << 10
MARK_GOOD_ATTEMPTS = 20  # RAUC not answering yet: retried this often,
MARK_GOOD_RETRY_S = 3.0  # this far apart


class UpdateError(EdgeError):
    """A bundle or an install request that is refused; the message says why."""


class NoSpaceError(UpdateError):
    """Refused before anything was written: a file system lacks the room an install needs."""


# ---------------------------------------------------------------- sans-IO trial policy

@dataclass(frozen=True)
class MarkGood:
    slot: str


@dataclass(frozen=True)
class Reboot:
    reason: str


@dataclass(frozen=True)
class Pending:
    """An install that waits to be proven: written before `rauc install` runs."""

    to_slot: str
    to_version: str
    from_slot: str
    from_version: str
    installed_at: float = 0.0
    # False while RAUC writes the slot, True once `rauc install` has finished (and switched
    # the bootloader to it). A boot that finds False was cut in the middle of an install:
    # no rollback (the new slot never ran), an interrupted install. A state file written
    # before this field existed counts as finished.
    written: bool = True

    @classmethod
    def from_json(cls, d: Any) -> Pending | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d["to_slot"]), str(d["to_version"]), str(d["from_slot"]),
                       str(d["from_version"]), float(d.get("installed_at", 0.0)),
                       d.get("written", True) is not False)
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        return {"to_slot": self.to_slot, "to_version": self.to_version,
                "from_slot": self.from_slot, "from_version": self.from_version,
                "installed_at": self.installed_at, "written": self.written}


@dataclass
class TrialPolicy:
    """What the supervisor does about the booted slot.

    A *trial* boot is the first boots of a freshly installed slot (`pending.to_slot` is the
    booted one). Any boot marks its slot good after `mark_good_after_s` of continuous proxy
    health (RAUC `mark-good`: the bootloader stops counting tries). A trial boot that is
    not marked good within `trial_timeout_s`, or whose proxy is FAILED, asks for a reboot:
    the bootloader spends another try, and after the last one returns to the old slot.
    A boot on the *other* slot while an install is pending is that return: a rollback.
    """

    booted: str
    pending: Pending | None
    mark_good_after_s: float
    trial_timeout_s: float
    started_at: float
    trial_failure: str = ""  # reason the trial boot gave before its reboot (state file)
    marked: bool = False
    reboot_asked: bool = False

    @property
    def trial(self) -> bool:
        return self.pending is not None and self.pending.to_slot == self.booted

    def boot_report(self) -> str | None:
        """"rolled back from <new> to <old>: <reason>" when this boot is a rollback."""
        p = self.pending
        if p is None or p.to_slot == self.booted:
            return None
        reason = self.trial_failure or (f"slot {p.to_slot} did not come up (no healthy "
                                        "boot within its tries)")
        return f"rolled back from {p.to_version} to {p.from_version}: {reason}"

    def tick(self, now: float, state: str, healthy_for: float) -> list[MarkGood | Reboot]:
        out: list[MarkGood | Reboot] = []
        if self.marked or self.reboot_asked:
            return out
        if self.mark_good_after_s > 0 and state == "RUNNING" and \
                healthy_for >= self.mark_good_after_s:
            self.marked = True
            out.append(MarkGood(self.booted))
            return out
        if self.trial:
            if state == "FAILED":
                self.reboot_asked = True
                out.append(Reboot(f"proxy FAILED on the new slot {self.booted}"))
            elif now - self.started_at >= self.trial_timeout_s:
                self.reboot_asked = True
                out.append(Reboot(f"proxy not healthy for {self.mark_good_after_s:g}s within "
                                  f"{self.trial_timeout_s:g}s of boot on slot {self.booted}"))
        return out

    def next_deadline(self) -> float | None:
        if self.trial and not (self.marked or self.reboot_asked):
            return self.started_at + self.trial_timeout_s
        return None


# ---------------------------------------------------------------- RAUC facts

_PCT = re.compile(r"^\s*(\d{1,3})%\s*(.*)$")


def parse_progress(line: str) -> tuple[int, str] | None:
    """`rauc install` prints `  20% Checking bundle done.`; -> (20, "Checking bundle done.")."""
    m = _PCT.match(line)
    if m is None:
        return None
    return min(100, int(m.group(1))), m.group(2).strip()


def parse_shell_info(text: str) -> dict[str, str]:
    """`rauc info --output-format=shell` (KEY='value' lines)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[A-Z0-9_]+", key):
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        out[key] = parts[0] if parts else ""
    return out


def slots_from_status(doc: Any) -> dict[str, dict[str, Any]]:
    """`rauc status --output-format=json` -> {bootname: {name, device, state, boot_status,
    version, installed}} for the rootfs slots."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(doc, dict):
        return out
    for entry in doc.get("slots") or []:
        if not isinstance(entry, dict):
            continue
        for name, s in entry.items():
            if not isinstance(s, dict) or s.get("class") != "rootfs":
                continue
            st = s.get("slot_status") or {}
            bundle = st.get("bundle") or {}
            inst = st.get("installed") or {}
            out[str(s.get("bootname") or name)] = {
                "name": name, "device": s.get("device"), "state": s.get("state"),
                "boot_status": s.get("boot_status"), "version": bundle.get("version"),
                "installed": inst.get("timestamp"), "status": st.get("status")}
    return out


def read_release(path: Path = RELEASE_FILE) -> str:
    """The running firmware's version (`/etc/sipedge-release`, VERSION=...)."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "VERSION":
                return v.strip().strip('"')
    except OSError:
        pass
    return __version__


def system_compatible(path: Path = SYSTEM_CONF) -> str | None:
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "compatible":
                return v.strip()
    except OSError:
        pass
    return None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an ordinary user may still write on the file system holding `path`: root's
    reserved blocks are not counted, they stay for the rest of the box."""
    st = os.statvfs(mount_point(path))
    return st.f_bavail * st.f_frsize


def check_free_space(path: str | os.PathLike[str], need: int, what: str) -> None:
    """Raise UpdateError when the file system holding `path` has less than `need` bytes
    free (`what` says what they are for). Called before anything is written."""
    mnt = mount_point(path)
    free = free_bytes(mnt)
    if free < need:
        raise NoSpaceError(f"refused, not enough free space on {mnt}: {what} needs "
                          f"{_mib(need)}, {_mib(free)} free; nothing was written")


def boot_env_path(system_conf: Path = SYSTEM_CONF,
                  fw_env_config: Path = FW_ENV_CONFIG) -> Path | None:
    """The bootloader environment RAUC rewrites: system.conf's `grubenv=` (GRUB), else the
    file named by fw_env.config (U-Boot); None when neither says."""
    try:
        for line in system_conf.read_text(encoding="utf-8").splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "grubenv" and v.strip():
                return Path(v.strip())
    except OSError:
        pass
    try:
        for line in fw_env_config.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                return Path(parts[0])
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class BundleInfo:
    path: str
    compatible: str
    version: str
    image_sha256: str
    image_size: int
    image_name: str


def check_bundle(path: str | os.PathLike[str], *, keyring: str | os.PathLike[str],
                 compatible: str, current: str, force: bool = False, rauc: str = "rauc",
                 unsquashfs: str = "unsquashfs",
                 on_progress: Callable[[int, str], None] | None = None,
                 label: str | None = None) -> BundleInfo:
    """Everything that can be checked without writing; raises UpdateError (see the module
    doc). Reads the bundle twice (signature, image hash); writes nothing. Errors name the
    bundle by `label` (the URL it was downloaded from) or else by its file name."""
    p = Path(path)
    if not p.is_file():
        raise UpdateError(f"{p}: no such bundle file")
    shown = label or p.name
    try:
        res = subprocess.run([rauc, "info", f"--keyring={keyring}", "--output-format=shell",
                              str(p)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateError(f"rauc info: {exc}") from None
    if res.returncode != 0:
        err = " ".join(ln.strip() for ln in res.stderr.splitlines()
                       if ln.strip() and "rauc-Message" not in ln)
        raise UpdateError(f"{shown}: refused, signature or format check failed: "
                          f"{err[-300:] or 'rc=' + str(res.returncode)}")
    info = parse_shell_info(res.stdout)
    got = info.get("RAUC_MF_COMPATIBLE", "")
    if got != compatible:
        raise UpdateError(f"{shown}: refused, bundle is for {got!r}, this box is "
                          f"{compatible!r}")
    try:
        new = Version.parse(info.get("RAUC_MF_VERSION", ""))
        cur = Version.parse(current)
    except ChannelError as exc:
        raise UpdateError(f"{shown}: refused, {exc}") from None
    if new <= cur and not force:
        what = "the running version" if new.key() == cur.key() else "a downgrade"
        raise UpdateError(f"{shown}: refused, {new} is {what} (running {cur}); "
                          "use `update install --force` to install it anyway")
    if info.get("RAUC_MF_IMAGES") != "1" or info.get("RAUC_IMAGE_CLASS_0") != "rootfs":
        raise UpdateError(f"{shown}: refused, want exactly one image for the rootfs slot")
    name = info.get("RAUC_IMAGE_NAME_0", "")
    digest = info.get("RAUC_IMAGE_DIGEST_0", "")
    try:
        size = int(info.get("RAUC_IMAGE_SIZE_0", ""))
    except ValueError:
        raise UpdateError(f"{shown}: refused, manifest has no image size") from None
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or "/" in name or not name:
        raise UpdateError(f"{shown}: refused, manifest image entry is malformed")
    h = hashlib.sha256()
    n = 0
    try:
        proc = subprocess.Popen([unsquashfs, "-no-progress", "-cat", str(p), name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise UpdateError(f"unsquashfs: {exc}") from None
    assert proc.stdout is not None
    last = -1
    with proc:
        while True:
            chunk = proc.stdout.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
            if n > size:
                proc.kill()
                break
            h.update(chunk)
            pct = n * 100 // max(1, size)
            if on_progress is not None and pct // 10 != last:
                last = pct // 10
                on_progress(pct, "verifying image")
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.returncode != 0 or n != size or h.hexdigest() != digest:
        detail = err.strip().splitlines()[-1] if err.strip() else f"{n} of {size} bytes"
        raise UpdateError(f"{shown}: refused, image does not match its signed checksum "
                          f"({detail})")
    return BundleInfo(str(p), got, str(new), digest, size, name)


# ---------------------------------------------------------------- runtime

@dataclass
class InstallJob:
    source: str
    started: float
    percent: int = 0
    step: str = "starting"
    done: bool = False
    ok: bool = False
    error: str = ""
    version: str = ""
    lines: list[str] = field(default_factory=list)


class OtaManager:
    """The `UpdateAgent` of a box with RAUC (see the module doc). Thread-safe where the
    console thread calls in (`install`, `status`)."""

    def __init__(self, params: Any, *, data_dir: Path, rauc: str = "rauc",
                 keyring: Path = KEYRING, release_file: Path = RELEASE_FILE,
                 system_conf: Path = SYSTEM_CONF, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 reboot_cmd: Sequence[str] = ("reboot",), index_key: Path = INDEX_KEY,
                 booted: str | None = None, boot_env: Path | None = None,
                 fw_env_config: Path = FW_ENV_CONFIG) -> None:
        self.params = params
        self.dir = Path(data_dir) / "ota"
        self.rauc = rauc
        self.keyring = keyring
        self.index_key = index_key
        self.system_conf = system_conf
        self.clock = clock
        self.wall_clock = wall_clock
        self.reboot_cmd = list(reboot_cmd)
        self.boot_env = boot_env or boot_env_path(system_conf, fw_env_config)
        self.version = read_release(release_file)
        self._lock = threading.Lock()
        self.job: InstallJob | None = None
        self.marked_good = False
        self.offer: dict[str, Any] | None = None  # a bundle on a USB stick / SD card
        self.media_mount = "/run/sipedge/update-media"
        # the disk the box booted from (hotplug.boot_disk): its partitions are never media
        # (udev announces them again at boot, while the supervisor already listens)
        self.ignore_disk: str | None = None
        self._check_thread: threading.Thread | None = None
        self._next_check = clock()
        try:
            self._window: tuple[int, int] | None | bool = parse_window(params.window)
        except ChannelError as exc:
            log.error("[update] window: %s; automatic installs are off", exc)
            self._window = False
        self.state = self._load()
        self.booted = booted or self._booted_slot()
        pending = Pending.from_json(self.state.get("pending"))
        if pending is not None and not pending.written and pending.to_slot != self.booted:
            # power cut / reset while RAUC wrote the other slot: RAUC had not switched the
            # bootloader to it, so this is the old slot as before, not a rollback
            msg = (f"install of {pending.to_version} into slot {pending.to_slot} was "
                   "interrupted (the box restarted while it was being written); slot "
                   f"{pending.to_slot} is not used, {pending.from_version} keeps running")
            log.error("%s", msg)
            self.state["last_install"] = {
                **(self.state.get("last_install") or {}), "version": pending.to_version,
                "result": "error", "error": msg, "time": wall_clock()}
            self.state.pop("pending", None)
            self.state.pop("trial_failure", None)
            self._save()
            pending = None
        elif pending is not None and not pending.written:
            # cut after RAUC switched to the slot but before the state file said so: the
            # slot booted, so it was written; a later return to the old slot is a rollback
            pending = Pending(**{**pending.__dict__, "written": True})
            self.state["pending"] = pending.to_json()
            self._save()
        self.policy = TrialPolicy(
            booted=self.booted, pending=pending,
            mark_good_after_s=params.mark_good_after_s,
            trial_timeout_s=params.trial_timeout_s, started_at=clock(),
            trial_failure=str(self.state.get("trial_failure") or ""))
        self.rollback = self.policy.boot_report()
        if self.rollback is not None:
            log.error("%s", self.rollback)
            self.state["last_rollback"] = {"message": self.rollback,
                                           "time": self.wall_clock()}
            self.state.pop("pending", None)
            self.state.pop("trial_failure", None)
            self._save()
        elif self.policy.trial:
            log.warning("trial boot of %s on slot %s (from %s)", self.version, self.booted,
                        self.policy.pending.from_version if self.policy.pending else "?")

    # ---------------------------------------------------------------- state file

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / "state.json.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.state, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / "state.json")
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("cannot write the update state dir=%s error=%s", self.dir, exc)

    # ---------------------------------------------------------------- RAUC

    def _run(self, *args: str, timeout: float = 60.0) -> str:
        try:
            res = subprocess.run([self.rauc, *args], capture_output=True, text=True,
                                 timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpdateError(f"rauc {args[0]}: {exc}") from None
        if res.returncode != 0:
            raise UpdateError(f"rauc {' '.join(args)}: rc={res.returncode} "
                              f"{res.stderr.strip()[-200:]}")
        return res.stdout

    def _booted_slot(self) -> str:
        try:
            for tok in Path("/proc/cmdline").read_text().split():
                if tok.startswith("rauc.slot="):
                    return tok.partition("=")[2]
        except OSError:
            pass
        return "?"

    def _wait_for_service(self) -> None:
        """`rauc install` needs RAUC's D-Bus service, which starts behind the boot (S30rauc):
        right after a boot, wait for it a little (an install thread, never the loop)."""
        for _ in range(MARK_GOOD_ATTEMPTS):
            try:
                self._run("status", timeout=30)
                return
            except UpdateError:
                time.sleep(MARK_GOOD_RETRY_S)

    def rauc_status(self) -> dict[str, Any]:
        try:
            doc = json.loads(self._run("status", "--detailed", "--output-format=json",
                                       timeout=30))
            return doc if isinstance(doc, dict) else {}
        except (UpdateError, ValueError) as exc:
            return {"error": str(exc)}

    def compatible(self) -> str:
        return system_compatible(self.system_conf) or ""

    # UpdateAgent port
    def mark_good(self) -> None:
        self._run("status", "mark-good")

    def summary(self) -> dict[str, Any]:
        """What the supervisor's status carries (no RAUC call: cheap, on the loop)."""
        job = self.job
        return {"booted": self.booted, "version": self.version, "marked_good": self.marked_good,
                "trial": self.policy.trial, "rollback": self.rollback,
                "installing": None if job is None or job.done else job.percent,
                "last_install": self.state.get("last_install")}

    def status(self) -> dict[str, Any]:
        """`update.status`: the summary plus RAUC's view of both slots and the channel."""
        doc = self.rauc_status()
        slots = slots_from_status(doc)
        with self._lock:
            job = self.job
            out: dict[str, Any] = {
                "booted": doc.get("booted") or self.booted,
                "version": self.version,
                "compatible": doc.get("compatible") or self.compatible(),
                "marked_good": self.marked_good,
                "trial": self.policy.trial,
                "slots": slots,
                "pending": self.state.get("pending"),
                "last_install": self.state.get("last_install"),
                "rollback": self.rollback,
                "last_rollback": self.state.get("last_rollback"),
                "channel": self.params.channel,
                "url": self.params.url,
                "last_check": self.state.get("last_check"),
                "media_offer": self.offer,
                "installing": None if job is None or job.done else {
                    "source": job.source, "percent": job.percent, "step": job.step},
            }
        if "error" in doc:
            out["rauc_error"] = doc["error"]
        return out

    # ---------------------------------------------------------------- supervisor hook

    def on_supervisor_tick(self, now: float, state: str, healthy_for: float) -> None:
        self._maybe_check(now, state)
        for act in self.policy.tick(now, state, healthy_for):
            if isinstance(act, MarkGood):
                # `rauc` may take seconds on a busy box: never on the supervisor's loop
                threading.Thread(target=self._mark_good, args=(act.slot, healthy_for),
                                 name="ota-mark-good", daemon=True).start()
            elif isinstance(act, Reboot):
                log.error("trial boot failed, rebooting for the bootloader to count it: %s",
                          act.reason)
                self.state["trial_failure"] = act.reason
                self._save()
                try:
                    subprocess.Popen(self.reboot_cmd)
                except OSError as exc:
                    log.error("reboot failed: %s", exc)

    def _mark_good(self, slot: str, healthy_for: float) -> None:
        # RAUC's service starts behind the boot (rootfs S30rauc): while it comes up the CLI
        # fails, so try again for a while before giving up (this runs in its own thread)
        for attempt in range(MARK_GOOD_ATTEMPTS):
            try:
                self.mark_good()
                log.info("slot %s marked good after %.0fs of health", slot, healthy_for)
                break
            except UpdateError as exc:
                if attempt + 1 == MARK_GOOD_ATTEMPTS:
                    log.error("mark-good failed: %s", exc)
                    return
                log.warning("mark-good failed, retrying in %.0fs: %s", MARK_GOOD_RETRY_S, exc)
                time.sleep(MARK_GOOD_RETRY_S)
        with self._lock:
            if self.policy.trial:
                self.state.pop("pending", None)
                self.state.pop("trial_failure", None)
                self._save()
            self.marked_good = True  # reported only once RAUC has done it

    def _maybe_check(self, now: float, state: str) -> None:
        """Periodic channel check every `check_interval_s` (first one once the booted slot
        is marked good: never while a trial boot is being judged); with `auto_install`,
        a newer release found is installed inside `window` (local time)."""
        if not self.params.url or not self.policy.marked or self.installing:
            return
        if self._check_thread is not None and self._check_thread.is_alive():
            return
        lc = self.state.get("last_check") or {}
        av = lc.get("available") if lc.get("ok") else None
        if av and self.params.auto_install and state == "RUNNING":
            tm = time.localtime(self.wall_clock())
            if self._window is not False and \
                    in_window(self._window, tm.tm_hour * 60 + tm.tm_min) and \
                    av.get("url") != (self.state.get("last_install") or {}).get("url"):
                log.warning("auto_install: installing %s from channel %s", av.get("version"),
                            self.params.channel)
                self.state.setdefault("last_install", {})["url"] = av.get("url")
                self.install(str(av["url"]))
                return
        if now < self._next_check:
            return
        self._next_check = now + self.params.check_interval_s
        self._check_thread = threading.Thread(target=self.check, name="ota-check", daemon=True)
        self._check_thread.start()

    def panel_alarms(self) -> list[str]:
        out = []
        if self.rollback:
            out.append("ROLLED BACK")
        if self.offer is not None:
            out.append("USB update: " + str(self.offer.get("version") or "UNSIGNED"))
        job = self.job
        if job is not None and job.done and not job.ok:
            out.append("update failed")
        return out

    @property
    def installing(self) -> bool:
        job = self.job
        return job is not None and not job.done

    def progress_line(self) -> str | None:
        job = self.job
        if job is None or job.done:
            return None
        return f"Update {job.percent}%"

    # ---------------------------------------------------------------- install

    def _other_slot(self) -> str:
        return {"A": "B", "B": "A"}.get(self.booted, "?")

    def install(self, source: str, *, force: bool = False, wait: bool = False) -> InstallJob:
        """Start an install of a local bundle file in a thread; returns the job at once
        (or when done with `wait`). One install at a time."""
        with self._lock:
            if self.job is not None and not self.job.done:
                raise UpdateError(f"an install is running ({self.job.source}, "
                                  f"{self.job.percent}%)")
            job = self.job = InstallJob(source=source, started=self.clock())
        t = threading.Thread(target=self._install, args=(job, force), name="ota-install",
                             daemon=True)
        t.start()
        if wait:
            t.join()
        return job

    def _progress(self, job: InstallJob, pct: int, step: str) -> None:
        with self._lock:
            if (pct, step) == (job.percent, job.step) and job.lines:
                return
            job.percent, job.step = pct, step
            job.lines.append(f"{pct:3d}% {step}")

    def check_space(self, download: int = 0) -> None:
        """Free space for an install, before anything is written (UpdateError if short):
        `download` more bytes plus FREE_MARGIN on /data, and BOOT_ENV_FREE where the
        bootloader environment lives. RAUC needs no more: it reads a verity bundle where
        it is (loop device + dm-verity, nothing staged) and writes the image straight into
        the slot's partition; a bundle file given on the console or on a USB stick is not
        copied either."""
        need = download + FREE_MARGIN
        check_free_space(self.dir, need,
                         (f"the download ({_mib(download)}) plus a margin of "
                          f"{_mib(FREE_MARGIN)}") if download else
                         f"an install (state and RAUC status files) {_mib(FREE_MARGIN)}")
        if self.boot_env is not None and self.boot_env.parent.exists():
            check_free_space(self.boot_env.parent, BOOT_ENV_FREE,
                             f"rewriting the bootloader environment {self.boot_env}")

    def _install(self, job: InstallJob, force: bool) -> None:
        origin = job.source
        try:
            if job.source.startswith(("http://", "https://")):
                job.source = self._download(job, job.source)
            else:
                self.check_space(0)
            self._progress(job, 0, "checking bundle")
            info = check_bundle(job.source, keyring=self.keyring, compatible=self.compatible(),
                                current=self.version, force=force, rauc=self.rauc,
                                on_progress=lambda p, s: self._progress(job, p * 3 // 10, s),
                                label=origin if origin != job.source else None)
            job.version = info.version
            pending = Pending(self._other_slot(), info.version, self.booted, self.version,
                              self.wall_clock(), written=False)
            self.state["pending"] = pending.to_json()
            self.state["last_install"] = {"source": job.source, "version": info.version,
                                          **({"url": origin} if origin != job.source else {}),
                                          "result": "installing", "error": "",
                                          "time": self.wall_clock()}
            self.state.pop("trial_failure", None)
            self._save()
            self._progress(job, 30, "installing")
            self._wait_for_service()
            proc = subprocess.Popen([self.rauc, "install", job.source], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                line = line.strip()
                if not line:
                    continue
                tail = (tail + [line])[-5:]
                pr = parse_progress(line)
                if pr is not None:
                    self._progress(job, 30 + pr[0] * 70 // 100, pr[1] or "installing")
            rc = proc.wait()
            if rc != 0:
                self.state.pop("pending", None)
                raise UpdateError("rauc install failed: " + " | ".join(tail)[-300:])
            self.state["pending"]["written"] = True  # saved with last_install below
            job.ok = True
            self._progress(job, 100, f"installed {info.version} into slot "
                                     f"{pending.to_slot}; reboot to start it")
        except UpdateError as exc:
            job.error = str(exc)
            log.error("update refused/failed: %s", exc)
            with self._lock:
                job.lines.append(f"error: {exc}")
        except Exception as exc:  # boundary: the install thread reports everything
            job.error = f"{type(exc).__name__}: {exc}"
            log.exception("update failed")
        finally:
            job.done = True
            self.state["last_install"] = {
                "source": job.source, "version": job.version,
                **({"url": origin} if origin != job.source else {}),
                "result": "ok" if job.ok else "error", "error": job.error,
                "time": self.wall_clock()}
            self._save()

    # ---------------------------------------------------------------- channel

    def _index_url(self) -> str:
        base = self.params.url.rstrip("/")
        if not base:
            raise UpdateError("no channel: set [update] url")
        return f"{base}/{self.params.channel}/index.json"

    def _fetch(self, coro_fn: Callable[[Any], Any]) -> Any:
        """Run one HttpClient job on a private event loop (this is a worker thread)."""
        import asyncio

        from ..modules.http_client import HttpClient, HttpError

        async def go() -> Any:
            client = HttpClient(timeout_s=30, max_response_bytes=256 * 1024)
            try:
                return await coro_fn(client)
            finally:
                await client.close()
        try:
            return asyncio.run(go())
        except (HttpError, ValueError, OSError) as exc:
            raise UpdateError(f"channel: {exc}") from None

    def check(self, *, force: bool = False) -> dict[str, Any]:
        """Fetch and verify the channel index; say what would be installed. Blocking (call
        it from a thread). Records `last_check`."""
        from .ota_channel import choose, load_public_key, verify_index
        result: dict[str, Any] = {"time": self.wall_clock(), "channel": self.params.channel}
        try:
            url = self._index_url()

            async def both(client: Any) -> tuple[bytes, bytes]:
                idx = await client.get(url)
                sig = await client.get(url + ".sig")
                for r in (idx, sig):
                    if r.status != 200:
                        raise UpdateError(f"{url}: HTTP {r.status}")
                return idx.body, sig.body
            data, sig = self._fetch(both)
            try:
                key = load_public_key(self.index_key.read_bytes())
                index = verify_index(data, sig, key, self.params.channel)
                choice = choose(index, url, Version.parse(self.version), self.compatible(),
                                force=force)
            except (ChannelError, OSError, ValueError) as exc:
                raise UpdateError(f"channel index refused: {exc}") from None
            result.update(ok=True, reason=choice.reason,
                          available=None if choice.release is None else {
                              "version": str(choice.release.version), "url": choice.url,
                              "size": choice.release.size, "sha256": choice.release.sha256,
                              "notes": choice.release.notes})
        except UpdateError as exc:
            result.update(ok=False, error=str(exc))
        self.state["last_check"] = result
        self._save()
        return result

    def _download(self, job: InstallJob, url: str) -> str:
        """Download a bundle to /data/ota (resumable, bounded); returns the file path. A
        channel URL's size and sha256 are checked when `update check` offered it."""
        dest = self.dir / "download.raucb"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "download.url"
        if not meta.exists() or meta.read_text() != url:
            dest.unlink(missing_ok=True)  # another bundle: no resume
            meta.write_text(url)
        offered = (self.state.get("last_check") or {}).get("available") or {}
        expect = offered if offered.get("url") == url else {}
        bound = int(expect.get("size") or self.params.max_bundle_bytes)
        have = dest.stat().st_size if dest.exists() else 0
        try:
            if expect:  # the size is signed: check before connecting
                self.check_space(max(0, bound - have))
        except NoSpaceError as exc:
            raise NoSpaceError(f"{url}: {exc}") from None
        self._progress(job, 0, f"downloading {url}")

        def prog(done: int, total: int | None) -> None:
            if total:
                self._progress(job, done * 100 // total, "downloading")

        def start(total: int | None, kept: int) -> None:
            # a plain URL: the size comes with the response head, before the body is
            # written (unknown, chunked: only the margin; a full /data then fails the
            # write itself, with the same "nothing written to the slot")
            if not expect:
                self.check_space(max(0, (total or kept) - kept))

        async def go(client: Any) -> int:
            return await client.download(url, dest, max_bytes=bound, timeout=3600,
                                         on_progress=prog, on_start=start)
        try:
            self._fetch(go)
        except UpdateError as exc:
            if dest.exists() and dest.stat().st_size == 0:
                dest.unlink()  # nothing of this download is kept
            if isinstance(exc, NoSpaceError):  # raised by start(): name the URL as above
                raise NoSpaceError(f"{url}: {exc}") from None
            raise
        if expect:
            h = hashlib.sha256()
            with open(dest, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != expect.get("sha256"):
                dest.unlink(missing_ok=True)
                raise UpdateError(f"{url}: downloaded file does not match the signed index "
                                  "(sha256); deleted")
        return str(dest)

    # ---------------------------------------------------------------- USB stick / SD card

    def on_media(self, ev: Any, runner: Callable[..., Any] | None = None) -> None:
        """Hotplug (a worker thread): a stick with a `.raucb` at its top level is *offered*
        (console, LCD, update.status), never installed unattended. It stays mounted
        read-only at /run/sipedge/update-media while offered; removal withdraws it."""
        from .hotplug import MediaInserted, MediaRemoved, on_disk
        if isinstance(ev, MediaInserted) and on_disk(ev.devnode, self.ignore_disk):
            return
        run = runner or (lambda argv: subprocess.run(list(argv), capture_output=True,
                                                     text=True, timeout=60, check=False))
        mnt = Path(self.media_mount)
        if isinstance(ev, MediaRemoved):
            if self.offer is not None and self.offer.get("device") == ev.devnode:
                log.info("update media removed dev=%s", ev.devnode)
                self.offer = None
                run(["umount", "-l", str(mnt)])
            return
        if not isinstance(ev, MediaInserted) or self.offer is not None:
            return
        mnt.mkdir(parents=True, exist_ok=True)
        res = run(["mount", "-t", ev.fstype, "-o", "ro,nosuid,nodev,noexec", ev.devnode,
                   str(mnt)])
        if res.returncode != 0:
            return
        bundles = sorted(mnt.glob("*.raucb"))
        if not bundles:
            run(["umount", str(mnt)])
            return
        path = bundles[-1]
        offer: dict[str, Any] = {"device": ev.devnode, "file": str(path),
                                 "name": path.name}
        res = run([self.rauc, "info", f"--keyring={self.keyring}", "--output-format=shell",
                   str(path)])
        if res.returncode == 0:
            info = parse_shell_info(res.stdout)
            offer.update(version=info.get("RAUC_MF_VERSION"),
                         compatible=info.get("RAUC_MF_COMPATIBLE"), signed=True)
        else:
            offer.update(signed=False, error=" ".join(res.stderr.split())[-200:])
        self.offer = offer
        log.warning("update bundle on %s: %s version=%s signed=%s; install it from the "
                    "console: update install usb", ev.devnode, path.name,
                    offer.get("version"), offer["signed"])

    # ---------------------------------------------------------------- RPC

    def rpc_methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        def install(params: dict[str, Any]) -> Any:
            src = str(params.get("source") or params.get("file") or "")
            if not src:
                raise ValueError("update.install needs source=FILE")
            if src == "usb":
                if self.offer is None:
                    raise ValueError("no update bundle on a USB stick / SD card")
                src = self.offer["file"]
            job = self.install(src, force=bool(params.get("force")))
            return {"started": job.source}

        def progress(params: dict[str, Any]) -> Any:
            job = self.job
            if job is None:
                return {"job": None}
            return {"source": job.source, "percent": job.percent, "step": job.step,
                    "done": job.done, "ok": job.ok, "error": job.error,
                    "lines": list(job.lines)}

        def check(params: dict[str, Any]) -> Any:
            t = threading.Thread(target=self.check, kwargs={"force": bool(params.get("force"))},
                                 name="ota-check", daemon=True)
            t.start()
            return {"checking": self.params.channel}

        async def status(params: dict[str, Any]) -> Any:
            import asyncio
            return await asyncio.to_thread(self.status)  # runs `rauc status`

        return {"update.status": status,
                "update.offer": lambda params: self.offer,
                "update.check": check,
                "update.last_check": lambda params: self.state.get("last_check"),
                "update.install": install,
                "update.progress": progress}
