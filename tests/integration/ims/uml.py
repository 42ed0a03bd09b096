"""Run a Python payload inside Debian's user-mode-linux kernel (esp4/esp6 as modules): the
host kernel has no ESP. UML boots in about 3 s with the host filesystem as its root
(hostfs, read-write), so the payload and this tree are visible at the same paths; the
payload writes its JSON result to a host file. Networking exists only inside UML (lo,
netns + veth made by the payload): nothing leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

UML = shutil.which("linux.uml") or shutil.which("linux")
MODULES_DIR = Path("/usr/lib/uml/modules")
MODPROBE = shutil.which("modprobe") or "/usr/sbin/modprobe"
KMODS = ("esp4 esp6 xfrm_user xfrm4_tunnel veth authenc echainiv seqiv hmac md5 sha1_generic "
         "cbc aes_generic des_generic crypto_null drbg jitterentropy_rng ecb af_alg "
         "algif_skcipher algif_hash")


def available() -> str | None:
    """None when UML can run here, else why not."""
    if UML is None or not MODULES_DIR.is_dir():
        return "user-mode-linux not installed (apt-get install user-mode-linux)"
    if not Path(MODPROBE).exists():
        return "kmod (modprobe) not installed"
    if os.geteuid() != 0:
        return "needs root (hostfs root, netns inside UML)"
    return None


INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
mount -t tmpfs run /run; mkdir -p /run/netns
mkdir -p /run/mr/lib; ln -s {modules} /run/mr/lib/modules
printf '#!/bin/sh\\nexec {modprobe} -d /run/mr "$@"\\n' > /run/modprobe
chmod +x /run/modprobe; echo /run/modprobe > /proc/sys/kernel/modprobe
{modprobe} -a -d /run/mr {kmods} 2>/dev/null
ip link set lo up
cd {cwd}
PYTHONPATH={pythonpath} PYTHONDONTWRITEBYTECODE=1 {python} {payload} {result} {args} \
  > {log} 2>&1
echo "payload rc=$?" >> {log}
echo o > /proc/sysrq-trigger
sleep 30
"""


def run(payload: Path, workdir: Path, args: list[str] | None = None, timeout: float = 240,
        mem: str = "768M", kmods: str = KMODS) -> dict:
    """Boot UML, run `python payload RESULT ARGS...` as part of init, return the JSON the
    payload wrote (raises with the payload log when it wrote none)."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = workdir / "result.json"
    log = workdir / "payload.log"
    init = workdir / "init.sh"
    app = Path(__file__).resolve().parents[3] / "app"
    init.write_text(INIT.format(
        modules=MODULES_DIR, modprobe=MODPROBE, kmods=kmods, cwd=workdir,
        pythonpath=f"{app}:{Path(__file__).parent}:{Path(__file__).parents[1]}", python=sys.executable, payload=payload,
        result=result, args=" ".join(args or []), log=log))
    init.chmod(0o755)
    cmd = [UML, f"mem={mem}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
           f"init={init}", "con=null", "con0=null,fd:1", "quiet"]
    boot = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    (workdir / "uml-console.log").write_bytes(boot.stdout)
    if not result.exists():
        text = log.read_text() if log.exists() else boot.stdout.decode(errors="replace")[-4000:]
        raise RuntimeError(f"UML payload wrote no result:\n{text}")
    return json.loads(result.read_text())
