"""System-test fixtures: build the offline image when it is missing or stale, boot it in QEMU.

Fixtures (see README.md in this directory):
  sipedge_image      session; the amd64 image (tools/image/mkimage.py, skipped when the host
                     cannot build or boot it)
  sipedge_image_arm64  session; the arm64 image (the smoke test in test_arm64.py; the base
                     tree comes from tools/image/mkbase_foreign.py and its cache)
  boot_guest         factory: boot_guest(image, boot_files=..., extra_args=..., append=...)
                     returns a started sipedge_vm.Guest; all guests stop at test end
  module_boot_guest  the same factory with module scope: tests of one module that can share
                     a boot do (each boot costs a minute of CI time); the guests stop at
                     module end
  sip_options        helper: sip_options(port, ruri_host) -> status code or None
Environment:
  SIPEDGE_TIMEOUT_MULTIPLIER  scales every guest timeout (slow CI), default 1
  SIPEDGE_TEST_ARM64=1        also the longer arm64 guest tests (make test-arm64)
  SIPEDGE_IMAGE_DIR           use an already built image directory instead of out/image-ARCH
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools/vm"))

from sipedge_vm import Guest, GuestError, load_image  # noqa: E402

from guest_helpers import BUILD_TOOLS, QEMU, RESULTS, TIMEOUT_MULTIPLIER, record  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if RESULTS:
        terminalreporter.section("sipedge system figures")
        for key, value in RESULTS.items():
            terminalreporter.write_line(f"{key}: {value}")


def _image(arch: str):
    """Build (if needed) and return the image for arch, or skip with the reason."""
    if os.environ.get("SIPEDGE_IMAGE_DIR"):
        return load_image(os.environ["SIPEDGE_IMAGE_DIR"])
    outdir = REPO / "out" / f"image-{arch}"
    tool = [sys.executable, str(REPO / "tools/image/mkimage.py"), "--arch", arch, "--out", str(outdir)]
    if shutil.which(QEMU[arch]) is None:
        pytest.skip(f"missing {QEMU[arch]} (apt packages are listed in tests/apt-packages.txt)")
    if subprocess.run(tool + ["--check"]).returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("building the image needs root (mmdebstrap root mode, chroot)")
        missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
        if arch == "arm64" and shutil.which("qemu-aarch64-static") is None:
            missing.append("qemu-aarch64-static")
        if missing:
            pytest.skip("missing host tools: " + " ".join(missing)
                        + " (apt packages are listed in tests/apt-packages.txt)")
        t0 = time.monotonic()
        log = outdir.parent / f"image-{arch}-build.log"
        outdir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as fh:
            rc = subprocess.run(tool, stdout=fh, stderr=subprocess.STDOUT, timeout=1800).returncode
        if rc != 0:
            pytest.fail(f"image build failed (rc={rc}); log {log}:\n" + log.read_text()[-4000:])
        record(f"image build {arch}", f"{time.monotonic() - t0:.0f} s")
    image = load_image(outdir)
    s = image.manifest["sizes"]
    record(f"image {arch}", f"{s['disk_allocated'] / 2**20:.0f} MiB allocated "
           f"({s['disk_apparent'] / 2**20:.0f} MiB apparent), rootfs {s['rootfs_tree'] / 2**20:.0f} MiB")
    return image


@pytest.fixture(scope="session")
def sipedge_image():
    return _image("amd64")


@pytest.fixture(scope="session")
def sipedge_image_arm64():
    return _image("arm64")


@pytest.fixture
def boot_guest(tmp_path, request):
    """Factory: boot_guest(image, **Guest options) -> started Guest, stopped at teardown."""
    yield from _guest_factory(tmp_path, request)


@pytest.fixture(scope="module")
def module_boot_guest(tmp_path_factory, request):
    """boot_guest for a guest that several tests of a module share (module-scoped fixtures
    built on it). Give it a `timeout_s` covering all of them."""
    yield from _guest_factory(tmp_path_factory.mktemp(request.module.__name__), request)


def _guest_factory(tmp_path, request):
    guests: list[Guest] = []

    def start(image, **kw) -> Guest:
        kw.setdefault("timeout_s", 300 * TIMEOUT_MULTIPLIER)
        kw.setdefault("name", f"guest{len(guests)}")
        guest = Guest(image, tmp_path, **kw)
        guests.append(guest)
        return guest.start()

    yield start
    for guest in guests:
        if guest.proc is not None and guest.proc.poll() is None and guest.autologin:
            # Keep the guest's own log next to the console transcript for post-mortems.
            try:
                _rc, out = guest.shell("logread 2>/dev/null | tail -n 60", timeout=10)
                (tmp_path / f"{guest.name}-logread.txt").write_text(out)
            except GuestError:
                pass
        guest.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"guest logs kept in {tmp_path}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
