"""/proc/crypto classification, and the sans-IO rule for the module's core files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sipedge.modules.ims_pcscf.crypto import (
    accelerated,
    classify_suites,
    parse_proc_crypto,
)

PROC = """name         : cbc(aes)
driver       : cbc(aes-generic)
module       : cbc
priority     : 100
refcnt       : 1
selftest     : passed
internal     : no
type         : skcipher
async        : no

name         : cbc(aes)
driver       : virtio_crypto_aes_cbc
module       : virtio_crypto
priority     : 150
refcnt       : 1
selftest     : passed
internal     : no
type         : skcipher
async        : yes

name         : sha1
driver       : sha1-ce
module       : kernel
priority     : 200
type         : shash

name         : sha1
driver       : sha1-generic
module       : kernel
priority     : 100
type         : shash

name         : md5
driver       : md5-generic
module       : kernel
priority     : 0
type         : shash

name         : cbc(des3_ede)
driver       : cbc-3des-caam
module       : caam_jr
priority     : 3000
type         : skcipher
async        : yes
"""


def test_classify():
    rows = classify_suites(parse_proc_crypto(PROC), ["aes-cbc", "hmac-sha-1-96", "hmac-md5-96",
                                                     "des-ede3-cbc", "null"])
    assert rows["aes-cbc"]["driver"] == "virtio_crypto_aes_cbc"
    assert rows["aes-cbc"]["kind"] == "hardware engine" and rows["aes-cbc"]["async"] is True
    assert rows["hmac-sha-1-96"]["kind"] == "CPU instructions"
    assert rows["hmac-md5-96"]["kind"] == "generic software"
    assert rows["des-ede3-cbc"]["kind"] == "hardware engine"
    assert rows["null"]["driver"] is None
    assert accelerated(parse_proc_crypto(PROC), ["aes-cbc", "hmac-md5-96"]) == {"aes-cbc"}


CORE = Path(__file__).parents[4] / "app" / "sipedge" / "modules" / "ims_pcscf"
DRIVERS = {"aio.py", "selftest.py", "rpc.py", "__main__.py"}
FORBIDDEN = {"asyncio", "socket", "ssl", "os", "time", "threading", "subprocess", "selectors"}


@pytest.mark.parametrize("path", [p for p in sorted(CORE.glob("*.py")) if p.name not in DRIVERS]
                         + sorted((CORE.parents[1] / "xfrm").glob("*.py")), ids=lambda p: p.name)
def test_core_is_sans_io(path):
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level >= 2:
            names = ["sipedge." + node.module]
        bad += [n for n in names if n.split(".")[0] in FORBIDDEN
                or n.startswith(("sipedge.io", "sipedge.app"))]
    assert not bad, f"{path.name} imports {bad}"
