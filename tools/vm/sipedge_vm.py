"""Boot the offline sipedge image in QEMU (TCG) and talk to it. Standard library only.

Used by tests/system (pytest fixtures in tests/system/conftest.py) and by tools/vm/run.

    from sipedge_vm import Guest, load_image
    image = load_image("out/image-amd64")
    with Guest(image, workdir, boot_files={"sipedge.toml": b"..."}) as vm:
        vm.console.expect(rb"sipedge-init: ", timeout=60)
        rc, out = vm.shell("cat /proc/uptime")
        port = vm.host_port("udp", 5060)           # 127.0.0.1:port reaches the guest's 5060
        vm.serial2.write(b"PING\\n")               # second serial port (guest: vm.mgmt_tty)

Every wait is bounded, and each guest has a hard deadline (timeout_s) after which QEMU is
killed. The disk is attached with snapshot=on, so the image never changes; boot files are written
with mtools into a sparse per-guest copy of the disk. With `persistent_disk=PATH` the guest
runs on that copy read-write and reboots for real (no -no-reboot): changes survive.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


class GuestError(Exception):
    """The guest did not do what was expected in time; the message quotes the console tail."""


@dataclass(frozen=True)
class Image:
    """A built image: the manifest written by tools/image/mkimage.py plus its directory."""

    bindir: Path
    manifest: dict

    @property
    def arch(self) -> str:
        return self.manifest["arch"]

    @property
    def meta(self) -> dict:
        return self.manifest["meta"]

    def path(self, key: str) -> Path:
        return self.bindir / self.manifest[key]


def load_image(outdir: str | os.PathLike) -> Image:
    bindir = Path(outdir) / "bin"
    return Image(bindir, json.loads((bindir / "manifest.json").read_text()))


class SerialPort:
    """A byte stream from the guest, buffered by a reader thread, with expect()."""

    def __init__(self, name: str, log_path: Path, writer):
        self.name = name
        self._writer = writer
        self._buf = bytearray()
        self._pos = 0
        self._cond = threading.Condition()
        self._closed = False
        self._log = open(log_path, "wb")

    def feed(self, data: bytes) -> None:
        with self._cond:
            if data:
                self._buf += data
                self._log.write(data)
                self._log.flush()
            else:
                self._closed = True
            self._cond.notify_all()

    def pump(self, read, chunk: int = 4096) -> threading.Thread:
        def loop():
            while True:
                try:
                    data = read(chunk)
                except OSError:
                    data = b""
                self.feed(data)
                if not data:
                    return

        t = threading.Thread(target=loop, name=f"serial-{self.name}", daemon=True)
        t.start()
        return t

    def expect(self, pattern: bytes | str, timeout: float) -> re.Match:
        """Wait for a regex after the last match; returns the match, raises GuestError."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._buf, self._pos)
                if m:
                    self._pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    why = "closed" if self._closed else f"timeout {timeout:.0f} s"
                    raise GuestError(f"{self.name}: {pattern!r} not seen ({why}); last output:\n"
                                     + self.tail())
                self._cond.wait(min(left, 1.0))

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self._writer(data)

    def text(self) -> str:
        with self._cond:
            return self._buf.decode(errors="replace")

    def tail(self, n: int = 3000) -> str:
        return self.text()[-n:]

    def close(self) -> None:
        self._log.close()


def _free_port() -> int:
    """A port number free for both UDP and TCP on 127.0.0.1 (bounded number of tries)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise GuestError("no free port on 127.0.0.1")


# Debian's u-boot-qemu: the arm64 image's firmware when it boots through its own bootloader
UBOOT_ARM64 = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"


@dataclass
class Guest:
    """One QEMU run of the image. Use as a context manager, or call start()/stop()."""

    image: Image
    workdir: Path
    boot_files: dict[str, bytes | str | Path] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    append: str = ""
    forward: tuple = (("udp", 5060), ("tcp", 5060))
    memory_mb: int = 512
    smp: int = 2
    timeout_s: float = 300.0
    autologin: bool = True
    # slirp restrict=on isolates the guest, but QEMU 7.2 then drops the guest's UDP replies to
    # a forwarded port (TCP forwards still work). Off by default so UDP SIP tests work; the
    # guest could then reach the outside through NAT, so tests must not make it originate
    # traffic beyond the host's 127.0.0.1 forwards.
    restrict: bool = False
    name: str = "guest"
    # Persistent-disk mode: this file is the guest's disk (created from the image on first
    # use, boot files written into it), attached read-write without -no-reboot, so changes
    # survive a `reboot` (a real one: QEMU keeps running) and the next run of the same file.
    persistent_disk: Path | None = None
    # A/B update tests: boot through the image's own bootloader (GRUB in the MBR on amd64)
    # instead of -kernel, from `disk` kept across runs (no snapshot), so slot switches,
    # boot counters and installed slots persist from one boot to the next.
    firmware_boot: bool = False
    disk: Path | None = None
    # extra slirp guestfwd rules, e.g. "tcp:10.0.2.100:8080-cmd:tools/vm/tcp-relay.py 41234":
    # the guest reaches a test server on the host's 127.0.0.1 through that address and port
    guestfwd: tuple = ()

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.proc: subprocess.Popen | None = None
        self.ports: dict[tuple[str, int], int] = {}
        self.console: SerialPort | None = None
        self.serial2: SerialPort | None = None
        self.started_at = 0.0
        self._serial2_sock: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._shell_ready = False
        self._seq = itertools.count(1)

    # ---- set-up -------------------------------------------------------------------------
    @property
    def mgmt_tty(self) -> str:
        """Guest device of the second serial port (ttyS1 on x86, hvc0 on arm64 virt)."""
        return "/dev/" + self.image.meta["MGMT_TTY"]

    def _disk(self) -> Path:
        if self.disk is not None:
            return Path(self.disk)
        disk = self.image.path("disk")
        if self.persistent_disk is not None:
            copy = Path(self.persistent_disk)
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
        elif not self.boot_files:
            return disk
        else:
            copy = self.workdir / f"{self.name}-disk.img"
            subprocess.run(["cp", "--sparse=always", str(disk), str(copy)], check=True)
        target = f"{copy}@@{self.image.manifest['boot_offset']}"
        for name, content in self.boot_files.items():
            src = self.workdir / f"{self.name}-bootfile-{Path(name).name}"
            if isinstance(content, Path):
                shutil.copyfile(content, src)
            else:
                src.write_bytes(content.encode() if isinstance(content, str) else content)
            subprocess.run(["mcopy", "-o", "-i", target, str(src), f"::{name}"], check=True,
                           env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        return copy

    def command(self) -> list[str]:
        meta = self.image.meta
        m = self.image.manifest
        cmdline = m["cmdline"] + " quiet"
        if self.autologin:
            cmdline += " sipedge.autologin"
        if self.image.arch == "amd64":
            # TCG on a loaded host: the kernel's IO-APIC timer check can time out and panic
            # ("IO-APIC + timer doesn't work"); skipping it is the usual setting for VMs
            cmdline += " no_timer_check"
        if self.append:
            cmdline += " " + self.append
        fwd = ",".join(f"hostfwd={proto}:127.0.0.1:{hp}-:{gp}"
                       for (proto, gp), hp in self.ports.items())
        netdev = "user,id=n0" + (",restrict=on" if self.restrict else "") + ("," + fwd if fwd else "")
        netdev += "".join(f",guestfwd={rule}" for rule in self.guestfwd)
        s2 = self.workdir / f"{self.name}-serial2.sock"
        cmd = [
            meta["QEMU_SYSTEM"], "-M", meta["QEMU_MACHINE"], "-cpu", meta["QEMU_CPU"],
            "-m", str(self.memory_mb), "-smp", str(self.smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            # persistent_disk: a reboot is a real one (QEMU keeps running); otherwise the
            # guest's reboot ends QEMU (the A/B tests boot it again from `disk`)
            *([] if self.persistent_disk is not None else ["-no-reboot"]),
            *(["-bios", UBOOT_ARM64] if self.firmware_boot and self.image.arch == "arm64"
              else []),
            *([] if self.firmware_boot else [
                "-kernel", str(self.image.path("kernel_image")),
                "-initrd", str(self.image.path("initrd")),
                "-append", cmdline]),
            "-drive", f"file={self._disk()},format=raw,if=none,id=disk0"
                      + ("" if self.disk is not None or self.persistent_disk is not None
                         else ",snapshot=on"),
            "-device", "virtio-blk-pci,drive=disk0",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            "-serial", "stdio",
            "-chardev", f"socket,id=serial2,path={s2},server=on,wait=off",
            "-qmp", f"unix:{self.workdir / f'{self.name}-qmp.sock'},server=on,wait=off",
        ]
        if self.image.arch == "amd64":
            cmd += ["-serial", "chardev:serial2"]
        else:  # virt has one PL011: the second port is a virtio console (hvc0)
            cmd += ["-device", "virtio-serial-pci",
                    "-device", "virtconsole,chardev=serial2,name=org.sipedge.serial2"]
        return cmd + list(self.extra_args)

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> "Guest":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for proto, gport in self.forward:
            self.ports[(proto, gport)] = _free_port()
        cmd = self.command()
        (self.workdir / f"{self.name}-qemu.cmd").write_text(" ".join(cmd) + "\n")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.workdir / f"{self.name}-qemu.stderr", "wb"))
        stdin = self.proc.stdin

        def write_console(data: bytes):
            stdin.write(data)
            stdin.flush()

        self.console = SerialPort("console", self.workdir / f"{self.name}-console.log", write_console)
        self.console.pump(self.proc.stdout.read1)
        self._timer = threading.Timer(self.timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()
        self._connect_serial2()
        return self

    def _connect_serial2(self) -> None:
        path = str(self.workdir / f"{self.name}-serial2.sock")
        deadline = time.monotonic() + 15
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise GuestError(f"cannot connect to {path}: " + self.qemu_stderr()) from e
                time.sleep(0.1)
        self._serial2_sock = s
        self.serial2 = SerialPort("serial2", self.workdir / f"{self.name}-serial2.log", s.sendall)
        self.serial2.pump(s.recv)

    def _expire(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()

    def qemu_stderr(self) -> str:
        p = self.workdir / f"{self.name}-qemu.stderr"
        return p.read_text(errors="replace") if p.exists() else ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def host_port(self, proto: str, guest_port: int) -> int:
        return self.ports[(proto, guest_port)]

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command on the running QEMU (hot-plug a USB stick: `blockdev-add`,
        `device_add`, `device_del`) and return its result; asynchronous events are skipped."""
        path = str(self.workdir / f"{self.name}-qmp.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(path)
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            result: Any = None
            for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
                f.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        raise GuestError(f"QMP {cmd}: connection closed")
                    msg = json.loads(line)
                    if "error" in msg:
                        raise GuestError(f"QMP {cmd}: {msg['error']}")
                    if "return" in msg:
                        result = msg["return"]
                        break
            return result

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise GuestError(f"QEMU still running after {timeout:.0f} s; console:\n"
                             + self.console.tail()) from e

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._serial2_sock:
            self._serial2_sock.close()
        for port in (self.console, self.serial2):
            if port:
                port.close()

    def __enter__(self) -> "Guest":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def rebooted(self) -> None:
        """After a guest reboot (persistent disk): the next shell() waits for the new shell."""
        self._shell_ready = False

    # ---- console shell (needs autologin) ------------------------------------------------
    def wait_shell(self, timeout: float = 120) -> None:
        """Wait until the autologin root shell on the console answers, then sync with it."""
        if self._shell_ready:
            return
        deadline = time.monotonic() + timeout
        while True:
            # Markers are printed in two halves so that an echoed command line never matches.
            tag = f"{os.getpid()}x{next(self._seq)}"
            self.console.write(f"\nstty -echo; PS1=''; PS2=''; printf '%s%s\\n' __SIPEDGE_RE ADY_{tag}\n")
            try:
                self.console.expect(rf"__SIPEDGE_READY_{tag}".encode(), timeout=3)
                break
            except GuestError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
        # Lines typed before the shell started run now; wait until they are all done.
        tag = f"{os.getpid()}x{next(self._seq)}"
        self.console.write(f"printf '%s%s\\n' __SIPEDGE_SY NC_{tag}\n")
        self.console.expect(rf"__SIPEDGE_SYNC_{tag}\r?\n".encode(), timeout=30)
        self._shell_ready = True

    def shell(self, command: str, timeout: float = 60, check: bool = False) -> tuple[int, str]:
        """Run a command in the console shell; returns (exit status, output)."""
        self.wait_shell()
        tag = next(self._seq)
        self.console.write(f"{command}\nprintf '\\n%s%s %d\\n' __SIPEDGE_ RC_{tag} $?\n")
        start = self.console._pos
        m = self.console.expect(rf"\n__SIPEDGE_RC_{tag} (\d+)\r?\n".encode(), timeout)
        out = self.console._buf[start:m.start()].decode(errors="replace").replace("\r", "")
        echo = f"__SIPEDGE_ RC_{tag} $?\n"
        if echo in out:  # the tty echoed the command (echo was still on)
            out = out.split(echo, 1)[1]
        rc = int(m.group(1))
        if check and rc != 0:
            raise GuestError(f"{command!r} failed with {rc}:\n{out}")
        return rc, out.strip("\n")
