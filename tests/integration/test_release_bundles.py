"""Bundles and channels with the real `rauc` (Debian's): tools/release builds a signed verity
bundle; the box's pre-install check (appliance.ota.check_bundle) refuses tampered, truncated,
unsigned, wrongly signed, wrong-compatible and downgrade bundles; publish and promote write
Ed25519-signed channel indexes that verify, and a forged one does not."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sipedge.appliance.ota import UpdateError, check_bundle
from sipedge.appliance.ota_channel import BadSignature, Version, load_public_key, verify_index

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not shutil.which("rauc") or not shutil.which("mksquashfs"),
                                 reason="needs rauc and squashfs-tools (tests/apt-packages.txt)")]


def load_release():
    spec = importlib.util.spec_from_file_location("sipedge_release",
                                                  REPO / "tools/release/release.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    r = load_release()
    d = tmp_path_factory.mktemp("release")
    r.make_dev_keys(d / "keys")
    r.make_dev_keys(d / "other", org="someone else")
    tree = d / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/sipedge-release").write_text("VERSION=0.1.0+2\n")
    (tree / "blob").write_bytes(os.urandom(300_000))
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(d / "rootfs.ext4"), "8M"],
                   check=True)
    good = r.make_bundle(d / "rootfs.ext4", "qemu-x86_64", "0.1.0+2", d / "good.raucb",
                         kd=d / "keys")
    return r, d, good


def check(d, bundle, **kw):
    args = dict(keyring=d / "keys/ca.cert.pem", compatible="sipedge-qemu-x86_64",
                current="0.1.0+1")
    args.update(kw)
    return check_bundle(bundle, **args)


def test_good_bundle_passes(rel):
    r, d, good = rel
    info = check(d, good)
    assert (info.compatible, info.version, info.image_size) == ("sipedge-qemu-x86_64",
                                                                "0.1.0+2", 8 << 20)
    raw = json.loads(subprocess.run(["rauc", "info", f"--keyring={d / 'keys/ca.cert.pem'}",
                                     "--output-format=json", str(good)], capture_output=True,
                                    text=True, check=True).stdout)
    assert raw["compatible"] == "sipedge-qemu-x86_64"


def mutate(src: Path, dst: Path, fn) -> Path:
    data = bytearray(src.read_bytes())
    dst.write_bytes(bytes(fn(data)))
    return dst


def flip(at):
    def fn(data):
        data[at if at >= 0 else len(data) + at] ^= 0x01
        return data
    return fn


@pytest.mark.parametrize("name,fn,msg", [
    ("payload byte", flip(5000), "signed checksum"),
    ("signature byte", flip(-200), "signature or format"),
    ("truncated", lambda data: data[:len(data) // 2], "signature or format"),
    ("size field", flip(-1), "signature or format"),
])
def test_tampered_bundles_refused(rel, tmp_path, name, fn, msg):
    r, d, good = rel
    bad = mutate(good, tmp_path / "bad.raucb", fn)
    with pytest.raises(UpdateError, match=msg):
        check(d, bad)


def test_unsigned_wrong_signer_wrong_compatible_downgrade(rel, tmp_path):
    r, d, good = rel
    # unsigned: a bare squashfs with a manifest, no CMS signature appended
    content = tmp_path / "content"
    content.mkdir()
    shutil.copy(d / "rootfs.ext4", content / "rootfs.ext4")
    (content / "manifest.raucm").write_text("[update]\ncompatible=sipedge-qemu-x86_64\n"
                                            "version=9.0.0\n[image.rootfs]\n"
                                            "filename=rootfs.ext4\n")
    subprocess.run(["mksquashfs", str(content), str(tmp_path / "unsigned.raucb"), "-quiet",
                    "-all-root"], check=True, capture_output=True)
    with pytest.raises(UpdateError, match="signature or format"):
        check(d, tmp_path / "unsigned.raucb")
    # signed by a CA the box does not trust
    other = r.make_bundle(d / "rootfs.ext4", "qemu-x86_64", "0.1.0+3", tmp_path / "o.raucb",
                          kd=d / "other")
    with pytest.raises(UpdateError, match="signature or format"):
        check(d, other)
    # another board's bundle
    pi = r.make_bundle(d / "rootfs.ext4", "raspberrypi4_64", "0.1.0+3", tmp_path / "pi.raucb",
                       kd=d / "keys")
    with pytest.raises(UpdateError, match="is for 'sipedge-raspberrypi4_64'"):
        check(d, pi)
    # downgrade and reinstall only when forced
    with pytest.raises(UpdateError, match="downgrade"):
        check(d, good, current="0.2.0")
    with pytest.raises(UpdateError, match="running version"):
        check(d, good, current="0.1.0+2")
    assert check(d, good, current="0.2.0", force=True).version == "0.1.0+2"


def test_publish_promote_and_forged_index(rel, tmp_path):
    r, d, good = rel
    root = tmp_path / "channels"
    kd = d / "keys"
    pub = load_public_key((kd / "index.pub.pem").read_bytes())
    e1 = r.publish(root, "nightly", good, min_version="0.1.0", notes="first", kd=kd)
    newer = r.make_bundle(d / "rootfs.ext4", "qemu-x86_64", "0.1.0+5", tmp_path / "n.raucb",
                          kd=kd)
    r.publish(root, "nightly", newer, kd=kd)
    night = verify_index((root / "nightly/index.json").read_bytes(),
                         (root / "nightly/index.json.sig").read_bytes(), pub, "nightly")
    assert [str(x.version) for x in night.releases] == ["0.1.0+2", "0.1.0+5"]
    assert e1.url == "../bundles/sipedge-qemu-x86_64-0.1.0_2.raucb" and e1.notes == "first"
    assert (root / "nightly" / e1.url).resolve().stat().st_size == e1.size
    # a bundle the keyring refuses is not published
    bad = mutate(good, tmp_path / "bad.raucb", flip(-200))
    with pytest.raises(r.ReleaseError):
        r.publish(root, "nightly", bad, kd=kd)

    # promote re-signs the newest entry into stable: same bundle file, no rebuild
    before = sorted(p.name for p in (root / "bundles").iterdir())
    r.promote(root, "nightly->stable", kd=kd)
    stable = verify_index((root / "stable/index.json").read_bytes(),
                          (root / "stable/index.json.sig").read_bytes(), pub, "stable")
    assert [str(x.version) for x in stable.releases] == ["0.1.0+5"]
    assert stable.releases[0].sha256 == night.releases[1].sha256
    assert sorted(p.name for p in (root / "bundles").iterdir()) == before
    r.promote(root, "nightly->stable", version="0.1.0+2", kd=kd)
    stable = r.read_index(root, "stable", kd)
    assert sorted(str(x.version) for x in stable.releases) == ["0.1.0+2", "0.1.0+5"]
    with pytest.raises(r.ReleaseError):
        r.promote(root, "stable->stable", kd=kd)

    # forged index: an entry edited after signing, or signed by another key
    data = (root / "stable/index.json").read_bytes()
    forged = data.replace(b"0.1.0+5", b"0.1.0+9")
    with pytest.raises(BadSignature):
        verify_index(forged, (root / "stable/index.json.sig").read_bytes(), pub, "stable")
    other = r.index_private_key(d / "other")
    with pytest.raises(BadSignature):
        verify_index(forged, r.sign_index(forged, other), pub, "stable")
    assert Version.parse("0.1.0+5") > Version.parse("0.1.0+2")

    # the command line: verify prints the entries
    env = dict(os.environ, SIPEDGE_RELEASE_KEYS=str(kd))
    out = subprocess.run([str(REPO / "tools/release/release.py"), "verify", "--channel",
                          "stable", "--dir", str(root)], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "sipedge-qemu-x86_64 0.1.0+5" in out
