"""Free space before an install, on real small file systems (a tmpfs of a fixed size that
the test mounts; root only): a channel release whose signed size does not fit on /data is
refused before the bundle is requested; a plain URL is refused when its Content-Length is
known, before a byte of it is written; a resumed download counts what it has; a local
bundle needs the margin on /data; the bootloader environment's file system needs room for
its rewrite. The channel index is signed with a key made here and served from 127.0.0.1;
`rauc` is the stand-in of test_ota_manager (never reached by a refusal)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import subprocess
import threading
from pathlib import Path

import pytest

from sipedge.appliance import ota
from sipedge.appliance.ota import OtaManager, UpdateError, check_free_space, free_bytes
from sipedge.appliance.ota_channel import Index, Release, Version, sign_index
from sipedge.appliance.params import UpdateParams
from test_ota_manager import fake_rauc

pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(120)]
MiB = 1 << 20
BUNDLE = 20 * MiB


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(name, size_mib) -> a mounted tmpfs of that size; unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def make(name: str, size_mib: int) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755",
                        "sipedge-test", str(mnt)], check=True)
        mounted.append(mnt)
        return mnt
    yield make
    for mnt in reversed(mounted):
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def channel(tmp_path):
    """A nightly channel on 127.0.0.1 with one signed release of BUNDLE bytes; yields
    (base url, bundle url, public key file, paths the server was asked for)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    www = tmp_path / "www"
    (www / "nightly").mkdir(parents=True)
    (www / "bundles").mkdir()
    blob = www / "bundles/big.raucb"
    with open(blob, "wb") as f:
        f.truncate(BUNDLE)  # zeros: never installed, only sized and downloaded
    h = hashlib.sha256()
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "index.pub"
    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM,
                                                  PublicFormat.SubjectPublicKeyInfo))
    idx = Index("nightly", "2026-12-07T13:00:00Z", (Release(
        Version.parse("0.3.0"), "sipedge-test", "../bundles/big.raucb", BUNDLE,
        h.hexdigest()),)).to_bytes()
    (www / "nightly/index.json").write_bytes(idx)
    (www / "nightly/index.json.sig").write_bytes(sign_index(idx, key))
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, f"{base}/bundles/big.raucb", pub, asked
    srv.shutdown()
    srv.server_close()


def manager(tmp_path, data: Path, base: str, pub: Path, boot_env: Path) -> tuple:
    rauc, log = fake_rauc(tmp_path)
    rel = tmp_path / "release"
    rel.write_text("VERSION=0.2.0\n")
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=sipedge-test\n")
    m = OtaManager(UpdateParams(url=base, channel="nightly"), data_dir=data, rauc=rauc,
                   release_file=rel, system_conf=conf, index_key=pub, booted="A",
                   reboot_cmd=["true"], boot_env=boot_env)
    return m, log


def fill(fs: Path, leave: int) -> None:
    """Write a file on fs until `leave` bytes are free."""
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(0, free_bytes(fs) - leave))


def test_check_free_space_reads_the_file_system(tmpfs):
    fs = tmpfs("small", 8)
    assert 7 * MiB < free_bytes(fs) <= 8 * MiB
    check_free_space(fs / "not/yet/there", 7 * MiB, "a test")  # its nearest parent counts
    with pytest.raises(UpdateError) as e:
        check_free_space(fs, 9 * MiB, "a test")
    assert str(e.value).startswith(f"refused, not enough free space on {fs}: a test needs "
                                   "9.0 MiB, 8.0 MiB free; nothing was written"), e.value


def test_channel_release_too_big_for_data_is_refused_before_it_is_requested(
        tmp_path, tmpfs, channel, caplog):
    base, url, pub, asked = channel
    data = tmpfs("data", 32)  # 20 MiB + the 16 MiB margin does not fit
    m, rauc_log = manager(tmp_path, data, base, pub, tmpfs("boot", 1) / "uboot.env")
    lc = m.check()
    assert lc["ok"] and lc["available"]["size"] == BUNDLE and lc["available"]["url"] == url
    with caplog.at_level(logging.ERROR, logger="sipedge.appliance.ota"):
        job = m.install(url, wait=True)
    assert not job.ok
    assert job.error.startswith(f"{url}: refused, not enough free space on {data}: the "
                                "download (20.0 MiB) plus a margin of 16.0 MiB needs "
                                "36.0 MiB, 32.0 MiB free; nothing was written"), job.error
    assert "/bundles/big.raucb" not in asked  # never requested
    assert not (data / "ota/download.raucb").exists()
    assert not rauc_log.exists()  # RAUC never ran
    assert m.status()["last_install"]["error"] == job.error  # update.status
    assert any("not enough free space" in r.getMessage() for r in caplog.records)  # log
    from sipedge.appliance.ota_console import format_status
    assert f"error: {job.error}" in format_status(m.status())  # console


def test_plain_url_refused_when_its_length_is_known(tmp_path, tmpfs, channel):
    base, url, pub, asked = channel
    data = tmpfs("data", 32)
    m, _ = manager(tmp_path, data, base, pub, tmpfs("boot", 1) / "uboot.env")
    job = m.install(url, wait=True)  # no channel check: the size is not known in advance
    assert not job.ok and "not enough free space" in job.error, job.error
    assert job.error.startswith(f"{url}: refused"), job.error
    assert asked == ["/bundles/big.raucb"]  # asked, but not a byte of it was written
    assert not (data / "ota/download.raucb").exists()


def test_resumed_download_counts_what_it_has(tmp_path, tmpfs, channel):
    """40 MiB: a fresh download needs 36 MiB, but 10 MiB of it are already there (free 30
    MiB): 10 + 16 fits and the download resumes (and then fails the stand-in's checks)."""
    base, url, pub, asked = channel
    data = tmpfs("data", 40)
    m, _ = manager(tmp_path, data, base, pub, tmpfs("boot", 1) / "uboot.env")
    assert m.check()["ok"]
    (data / "ota").mkdir(exist_ok=True)
    (data / "ota/download.url").write_text(url)
    (data / "ota/download.raucb").write_bytes(b"\0" * (10 * MiB))
    fill(data, 30 * MiB)
    job = m.install(url, wait=True)
    assert "free space" not in job.error, job.error
    assert (data / "ota/download.raucb").stat().st_size == BUNDLE  # downloaded to the end


def test_local_bundle_needs_the_margin_and_room_for_the_boot_env(tmp_path, tmpfs, channel):
    base, _url, pub, _asked = channel
    data = tmpfs("data", 24)
    boot = tmpfs("boot", 1)
    bundle = tmp_path / "local.raucb"
    bundle.write_bytes(b"a bundle on a USB stick\n")
    m, rauc_log = manager(tmp_path, data, base, pub, boot / "uboot.env")
    fill(data, 15 * MiB)
    job = m.install(str(bundle), wait=True)
    assert "not enough free space on " + str(data) in job.error, job.error
    assert not rauc_log.exists()
    (data / "filler").unlink()
    fill(boot, 32 << 10)
    job = m.install(str(bundle), wait=True)
    assert f"not enough free space on {boot}: rewriting the bootloader environment" \
        in job.error, job.error
    assert not rauc_log.exists()
    (boot / "filler").unlink()
    job = m.install(str(bundle), wait=True)  # room everywhere: on to the bundle checks
    assert "free space" not in job.error and rauc_log.exists(), job.error


def test_boot_env_path_from_system_conf_or_fw_env_config(tmp_path):
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\nbootloader=grub\ngrubenv=/boot/grub/grubenv\n")
    assert ota.boot_env_path(conf, tmp_path / "none") == Path("/boot/grub/grubenv")
    conf.write_text("[system]\nbootloader=uboot\n")
    fw = tmp_path / "fw_env.config"
    fw.write_text("# file offset size\n/boot/uboot.env 0x0 0x4000\n")
    assert ota.boot_env_path(conf, fw) == Path("/boot/uboot.env")
    assert ota.boot_env_path(tmp_path / "none", tmp_path / "none") is None
