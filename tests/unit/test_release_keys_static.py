"""No private key is ever committed (issue 12): tools/release creates the development CA,
signing key and index key in tools/release/dev-keys, which git ignores, and the release
set comes from a path in SIPEDGE_RELEASE_KEYS. Checked on the git checkout; < 1 s."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    return git("ls-files", "-z").stdout.split("\0")


def test_dev_keys_folder_is_ignored(tracked):
    assert git("check-ignore", "-q", "tools/release/dev-keys/signing.key.pem").returncode == 0
    assert not [f for f in tracked if f.startswith("tools/release/dev-keys/")]


def test_no_tracked_file_holds_a_private_key(tracked):
    # a PEM private key: the BEGIN line and a line of base64 (a doc that only names the
    # marker, as docs/tls.md does, is not one); the marker is built here so that this
    # file does not match itself
    pem = re.compile(rb"-----BEGIN [A-Z ]*" + b"PRIVATE" + rb" KEY-----\r?\n[A-Za-z0-9+/=]{40,}")
    found = []
    for name in tracked:
        p = REPO / name
        if name and p.is_file() and p.stat().st_size < 1 << 20 and pem.search(p.read_bytes()):
            found.append(name)
    assert found == []
