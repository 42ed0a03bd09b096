#!/usr/bin/env python3
"""Release tooling: signing keys, RAUC bundles, channel folders (publish, promote).

usage:
  release.py keys                                     show (and on first use create) the keys
  release.py bundle --rootfs IMG --board ID [--version V] --out F.raucb
  release.py bundle-qemu --arch amd64|arm64 [--out F.raucb]   from out/image-ARCH's slot A
  release.py publish --channel nightly --dir DIR (--bundle F.raucb | --arch A)
                     [--min-version V] [--notes TEXT]
  release.py promote nightly->stable --dir DIR [--version V] [--compatible C]
  release.py verify --channel C --dir DIR             check an index with the public key

Keys. Without SIPEDGE_RELEASE_KEYS, a development set is created on first use in
tools/release/dev-keys/ (git-ignored): a CA (ca.cert.pem, the RAUC keyring), a signing
certificate and key issued by it (signing.cert.pem, signing.key.pem), and the Ed25519 key
that signs channel indexes (index.key.pem, index.pub.pem). For a release build,
SIPEDGE_RELEASE_KEYS=/path/to/dir names a folder holding the same file names, kept off
the build tree (an HSM-backed or offline copy); it is never created automatically. Images
install the keyring and index.pub of whichever set is active, so a development image
refuses release bundles and the other way round. No private key is ever committed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "app"))

from sipedge import __version__ as PROJECT_VERSION  # noqa: E402
from sipedge.appliance.ota_channel import (  # noqa: E402
    CHANNELS, ChannelError, Index, Release, Version, load_public_key, parse_index, sign_index,
    verify_index)

DEV_KEYS = HERE / "dev-keys"
KEY_FILES = ("ca.cert.pem", "signing.cert.pem", "signing.key.pem", "index.key.pem",
             "index.pub.pem")
BOARDS = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}


class ReleaseError(Exception):
    pass


def log(msg: str) -> None:
    print(f"release: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- keys

def keys_dir(create: bool = True) -> Path:
    env = os.environ.get("SIPEDGE_RELEASE_KEYS")
    if env:
        d = Path(env)
        missing = [f for f in KEY_FILES if not (d / f).is_file()]
        if missing:
            raise ReleaseError(f"SIPEDGE_RELEASE_KEYS={d}: missing {', '.join(missing)}")
        return d
    if create and not all((DEV_KEYS / f).is_file() for f in KEY_FILES):
        make_dev_keys(DEV_KEYS)
    return DEV_KEYS


def make_dev_keys(d: Path, org: str = "sipedge development") -> None:
    """A throw-away CA + signing certificate (EC P-256) and an Ed25519 index key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{org} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    sk = ec.generate_private_key(ec.SECP256R1())
    sname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                       x509.NameAttribute(NameOID.COMMON_NAME, f"{org} bundle signing")])
    cert = (x509.CertificateBuilder().subject_name(sname).issuer_name(ca_name)
            .public_key(sk.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            # no extendedKeyUsage: RAUC checks the S/MIME signing purpose by default, and
            # codeSigning alone fails it ("unsuitable certificate purpose")
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ik = ed25519.Ed25519PrivateKey.generate()
    pem = serialization.Encoding.PEM
    nopw = serialization.NoEncryption()
    pk8 = serialization.PrivateFormat.PKCS8
    spki = serialization.PublicFormat.SubjectPublicKeyInfo

    def write(name: str, data: bytes, private: bool) -> None:
        p = d / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    write("ca.key.pem", ca_key.private_bytes(pem, pk8, nopw), True)
    write("ca.cert.pem", ca.public_bytes(pem), False)
    write("signing.key.pem", sk.private_bytes(pem, pk8, nopw), True)
    write("signing.cert.pem", cert.public_bytes(pem), False)
    write("index.key.pem", ik.private_bytes(pem, pk8, nopw), True)
    write("index.pub.pem", ik.public_key().public_bytes(pem, spki), False)
    (d / "README").write_text("Development signing keys, created by tools/release on first use.\n"
                              "Never commit, never use for a release (SIPEDGE_RELEASE_KEYS).\n")
    log(f"created development CA, signing certificate and index key in {d}")


def index_private_key(kd: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key((kd / "index.key.pem").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{kd / 'index.key.pem'} is not an Ed25519 key")
    return key


# ---------------------------------------------------------------- bundles

def build_id() -> str:
    return os.environ.get("SIPEDGE_BUILD_ID") or dt.datetime.now(dt.timezone.utc).strftime(
        "%Y%m%d%H%M%S")


def default_version() -> str:
    return f"{PROJECT_VERSION}+{build_id()}"


def compatible_for(board: str) -> str:
    return f"sipedge-{board}"


def make_bundle(rootfs: Path, board: str, version: str, out: Path,
                kd: Path | None = None) -> Path:
    """A verity bundle with one image (the root file system of slot rootfs.N)."""
    Version.parse(version)
    kd = kd or keys_dir()
    if not shutil.which("rauc"):
        raise ReleaseError("rauc is not installed (apt-get install rauc)")
    with tempfile.TemporaryDirectory(prefix="bundle.", dir=out.parent) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        try:
            os.link(rootfs, content / "rootfs.ext4")
        except OSError:
            shutil.copyfile(rootfs, content / "rootfs.ext4")
        (content / "manifest.raucm").write_text(
            "[update]\n"
            f"compatible={compatible_for(board)}\n"
            f"version={version}\n"
            f"build={version.partition('+')[2] or build_id()}\n"
            f"description=sipedge {version} for {board}\n\n"
            "[bundle]\nformat=verity\n\n"
            "[image.rootfs]\nfilename=rootfs.ext4\n")
        tmp_out = Path(tmp) / "out.raucb"
        extra = os.environ.get("SIPEDGE_BUNDLE_MKSQUASHFS_ARGS")  # e.g. "-comp lz4" (tests)
        res = subprocess.run(["rauc", "bundle", f"--cert={kd / 'signing.cert.pem'}",
                              *([f"--mksquashfs-args={extra}"] if extra else []),
                              f"--key={kd / 'signing.key.pem'}",
                              f"--keyring={kd / 'ca.cert.pem'}", str(content), str(tmp_out)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise ReleaseError(f"rauc bundle failed: {res.stderr.strip()[-400:]}")
        os.replace(tmp_out, out)
    log(f"{out}: {out.stat().st_size} bytes, compatible={compatible_for(board)} "
        f"version={version}")
    return out


def bundle_info(path: Path, keyring: Path) -> dict:
    res = subprocess.run(["rauc", "info", f"--keyring={keyring}", "--output-format=json",
                          str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise ReleaseError(f"{path}: {res.stderr.strip()[-300:]}")
    return json.loads(res.stdout)


def slot_a_image(arch: str, out: Path) -> Path:
    """Extract partition 2 (slot A) of out/image-ARCH/bin/sipedge.img."""
    img = REPO / f"out/image-{arch}/bin/sipedge.img"
    if not img.is_file():
        raise ReleaseError(f"{img} does not exist: run tools/image/mkimage.py --arch {arch}")
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], check=True,
                                      capture_output=True, text=True).stdout)
    part = table["partitiontable"]["partitions"][1]
    sector = table["partitiontable"].get("sectorsize", 512)
    with open(img, "rb") as src, open(out, "wb") as dst:
        src.seek(part["start"] * sector)
        left = part["size"] * sector
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), 1)  # keep it sparse
            else:
                dst.write(chunk)
            left -= len(chunk)
        dst.truncate()
    return out


def bundle_qemu(arch: str, out: Path | None, version: str | None) -> Path:
    board = BOARDS[arch]
    version = version or default_version()
    out = out or REPO / f"out/bundles/sipedge-{board}-{version.replace('+', '_')}.raucb"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        rootfs = slot_a_image(arch, Path(tmp) / "rootfs.ext4")
        return make_bundle(rootfs, board, version, out)


# ---------------------------------------------------------------- channels

def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_index(root: Path, channel: str, kd: Path) -> Index:
    f = root / channel / "index.json"
    if not f.exists():
        return Index(channel, now_text(), ())
    pub = load_public_key((kd / "index.pub.pem").read_bytes())
    return verify_index(f.read_bytes(), (root / channel / "index.json.sig").read_bytes(), pub,
                        channel)


def write_index(root: Path, idx: Index, kd: Path) -> None:
    d = root / idx.channel
    d.mkdir(parents=True, exist_ok=True)
    data = idx.to_bytes()
    sig = sign_index(data, index_private_key(kd))
    for name, blob in (("index.json", data), ("index.json.sig", sig)):
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, d / name)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def publish(root: Path, channel: str, bundle: Path, min_version: str | None = None,
            notes: str = "", kd: Path | None = None) -> Release:
    if channel not in CHANNELS:
        raise ReleaseError(f"channel must be one of {', '.join(CHANNELS)}")
    kd = kd or keys_dir()
    info = bundle_info(bundle, kd / "ca.cert.pem")  # refuses what the box would refuse
    version = Version.parse(info["version"])
    (root / "bundles").mkdir(parents=True, exist_ok=True)
    name = f"{info['compatible']}-{str(version).replace('+', '_')}.raucb"
    dest = root / "bundles" / name
    if dest.resolve() != bundle.resolve():
        shutil.copyfile(bundle, dest.with_suffix(".tmp"))
        os.replace(dest.with_suffix(".tmp"), dest)
    rel = Release(version=version, compatible=info["compatible"], url=f"../bundles/{name}",
                  size=dest.stat().st_size, sha256=sha256_file(dest),
                  min_version=Version.parse(min_version) if min_version else None, notes=notes)
    idx = read_index(root, channel, kd)
    keep = tuple(r for r in idx.releases
                 if not (r.compatible == rel.compatible and r.version.key() == version.key()))
    write_index(root, Index(channel, now_text(), keep + (rel,)), kd)
    log(f"published {version} ({rel.compatible}) to {root / channel}")
    return rel


def promote(root: Path, spec: str, version: str | None = None,
            compatible: str | None = None, kd: Path | None = None) -> list[Release]:
    src, sep, dst = spec.partition("->")
    if not sep or src not in CHANNELS or dst not in CHANNELS or src == dst:
        raise ReleaseError(f"promote wants SRC->DST of {', '.join(CHANNELS)}, not {spec!r}")
    kd = kd or keys_dir()
    sidx = read_index(root, src, kd)
    cands = [r for r in sidx.releases if compatible is None or r.compatible == compatible]
    if version:
        want = Version.parse(version).key()
        cands = [r for r in cands if r.version.key() == want]
    else:  # the newest per compatible
        newest: dict[str, Release] = {}
        for r in cands:
            if r.compatible not in newest or r.version > newest[r.compatible].version:
                newest[r.compatible] = r
        cands = list(newest.values())
    if not cands:
        raise ReleaseError(f"nothing to promote in {src}")
    for r in cands:  # the bundle must still be what the source index promised
        f = (root / src / r.url).resolve()
        if not f.is_file() or f.stat().st_size != r.size or sha256_file(f) != r.sha256:
            raise ReleaseError(f"{f}: missing or not the bundle the {src} index names")
    didx = read_index(root, dst, kd)
    keys = {(r.compatible, r.version.key()) for r in cands}
    keep = tuple(r for r in didx.releases if (r.compatible, r.version.key()) not in keys)
    write_index(root, Index(dst, now_text(), keep + tuple(cands)), kd)
    for r in cands:
        log(f"promoted {r.version} ({r.compatible}) {src} -> {dst}")
    return cands


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="release", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("keys")
    b = sub.add_parser("bundle")
    b.add_argument("--rootfs", type=Path, required=True)
    b.add_argument("--board", required=True)
    b.add_argument("--version")
    b.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("bundle-qemu")
    q.add_argument("--arch", choices=sorted(BOARDS), default="amd64")
    q.add_argument("--version")
    q.add_argument("--out", type=Path)
    p = sub.add_parser("publish")
    p.add_argument("--channel", required=True, choices=CHANNELS)
    p.add_argument("--dir", type=Path, default=REPO / "out/channels")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--bundle", type=Path)
    g.add_argument("--arch", choices=sorted(BOARDS))
    p.add_argument("--version")
    p.add_argument("--min-version")
    p.add_argument("--notes", default="")
    r = sub.add_parser("promote")
    r.add_argument("spec", help="nightly->stable")
    r.add_argument("--dir", type=Path, default=REPO / "out/channels")
    r.add_argument("--version")
    r.add_argument("--compatible")
    v = sub.add_parser("verify")
    v.add_argument("--channel", required=True, choices=CHANNELS)
    v.add_argument("--dir", type=Path, default=REPO / "out/channels")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "keys":
            kd = keys_dir()
            print(kd)
            for f in KEY_FILES:
                print(f"  {f}")
        elif a.cmd == "bundle":
            make_bundle(a.rootfs, a.board, a.version or default_version(), a.out)
        elif a.cmd == "bundle-qemu":
            print(bundle_qemu(a.arch, a.out, a.version))
        elif a.cmd == "publish":
            bundle = a.bundle or bundle_qemu(a.arch, None, a.version)
            publish(a.dir, a.channel, bundle, a.min_version, a.notes)
        elif a.cmd == "promote":
            promote(a.dir, a.spec, a.version, a.compatible)
        elif a.cmd == "verify":
            kd = keys_dir(create=False)
            idx = read_index(a.dir, a.channel, kd)
            for rel in idx.releases:
                print(f"{rel.compatible} {rel.version} {rel.size} {rel.url}")
    except (ReleaseError, ChannelError, OSError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
