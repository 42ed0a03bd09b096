#!/usr/bin/env python3
"""Relay stdin/stdout to a TCP port on the host's loopback, for QEMU's per-connection
`guestfwd=tcp:GUESTADDR:PORT-cmd:tcp-relay.py PORT` (a `tcp:` chardev target would carry
only the first guest connection). Only 127.0.0.1 is ever dialled."""
import os
import select
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(None)
    open_in = True
    while True:
        watch = [s] + ([0] if open_in else [])
        r, _, _ = select.select(watch, [], [], 600)
        if not r:
            return 0
        if 0 in r:
            data = os.read(0, 65536)
            if not data:
                open_in = False
                s.shutdown(socket.SHUT_WR)
            else:
                s.sendall(data)
        if s in r:
            data = s.recv(65536)
            if not data:
                return 0
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]


if __name__ == "__main__":
    sys.exit(main())
