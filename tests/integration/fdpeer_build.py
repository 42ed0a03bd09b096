"""Compile the test-only freeDiameter extension fdpeer/fdpeer.c (freeDiameterd as a Cx client,
or a server answering 2001). Standard library only: the tests (diameter_harness.py) and the
Diameter bench (bench/benchlib/diameter.py) both build it with this."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FDPEER_SRC = Path(__file__).parent / "fdpeer" / "fdpeer.c"
FD_HEADERS = Path("/usr/include/freeDiameter/extension.h")


def build_fdpeer(directory: Path) -> Path | None:
    """`directory`/fdpeer.fdx, or None when freeDiameterd, its headers (Debian
    libfreediameter-dev) or cc are missing."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if shutil.which("freeDiameterd") is None or cc is None or not FD_HEADERS.exists():
        return None
    out = Path(directory) / "fdpeer.fdx"
    subprocess.run([cc, "-Wall", "-Werror", "-O1", "-shared", "-fPIC", "-o", str(out),
                    str(FDPEER_SRC), "-lfdcore", "-lfdproto", "-lpthread"],
                   check=True, capture_output=True, timeout=120)
    return out
