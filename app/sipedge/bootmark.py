"""Boot-stage marks: `stage uptime pid` lines appended to $SIPEDGE_BOOT_MARKS.

The appliance's init sets SIPEDGE_BOOT_MARKS=/run/sipedge/boot-marks (rootfs/usr/libexec/
sipedge/run-supervisor); the boot-time figures of tests/system and `bench/run.py --boot` read
it to split boot-to-first-200 into stages. Without the variable nothing is written. The time
is CLOCK_BOOTTIME, i.e. seconds since the kernel started, the same clock as /proc/uptime.
Standard library only and cheap to import: it runs before the heavy imports it measures.
"""
import os
import time


def mark(stage: str) -> None:
    path = os.environ.get("SIPEDGE_BOOT_MARKS")
    if not path:
        return
    line = f"{stage} {time.clock_gettime(time.CLOCK_BOOTTIME):.3f} {os.getpid()}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return  # a measuring aid: /run missing or read-only must never stop the proxy
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
