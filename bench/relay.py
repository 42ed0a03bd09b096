#!/usr/bin/env python3
"""Bare UDP relay: the floor for a SIP proxy written in Python.

It parses nothing.  A datagram from the callee's address goes to the last
caller address seen, anything else goes to the callee.  One blocking socket,
one process, no event loop: what is left is the cost of the interpreter
running recvfrom/sendto.  It only works with one caller socket (SIPp -t u1),
which is how bench/run.py drives it.
"""
import argparse
import signal
import socket
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:5075", help="HOST:PORT to bind")
    ap.add_argument("--callee", default="127.0.0.1:5080", help="HOST:PORT to relay to")
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    chost, cport = args.callee.rsplit(":", 1)
    callee = (socket.gethostbyname(chost), int(cport))

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, int(port)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    recvfrom = sock.recvfrom
    sendto = sock.sendto
    caller = None
    try:
        while True:
            data, addr = recvfrom(65535)
            if addr == callee:
                if caller is not None:
                    sendto(data, caller)
            else:
                caller = addr
                sendto(data, callee)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
