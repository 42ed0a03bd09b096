"""An in-memory network of Diameter nodes (the aioquic `roundtrip` idea for many nodes).

`Net.add(name, node)` registers a node under its address; `run(now)` carries out every action
until nothing moves. Connects go to the node registered for the address; `down(name)` makes a
node unreachable (its connections are cut), `blackhole(name)` makes it swallow what it gets.
"""

from __future__ import annotations

import itertools

from sipedge.diameter.peer import Close, Send
from sipedge.modules.diameter.core import ConnectTo


class Net:
    def __init__(self) -> None:
        self.nodes = {}
        self.links = {}  # (node name, conn) -> (other node name, other conn)
        self.ids = itertools.count(1)
        self.dead = set()
        self.holes = set()
        self.sent = []  # (from, to, bytes)
        self.events = {}
        self.refuse_connects = set()

    def add(self, name, node):
        self.nodes[name] = node
        self.events[name] = []

    def _deliver(self, name, conn, data, now):
        other = self.links.get((name, conn))
        if other is None:
            return
        oname, oconn = other
        self.sent.append((name, oname, data))
        if oname in self.holes:
            return
        self.nodes[oname].data_received(oconn, data, now)

    def _close(self, name, conn, now):
        other = self.links.pop((name, conn), None)
        if other is None:
            return
        self.links.pop(other, None)
        self.nodes[other[0]].connection_lost(other[1], now)

    def cut(self, name, now):
        """The node vanishes: every connection it had is lost on the far side."""
        for (n, c), other in list(self.links.items()):
            if n == name:
                self.links.pop((n, c), None)
                self.links.pop(other, None)
                self.nodes[other[0]].connection_lost(other[1], now)

    def run(self, now, rounds=50):
        for _ in range(rounds):
            moved = False
            for name, node in list(self.nodes.items()):
                if name in self.dead:
                    node.actions()
                    continue
                for a in node.actions():
                    moved = True
                    if isinstance(a, ConnectTo):
                        target = a.address
                        if target not in self.nodes or target in self.dead or \
                                target in self.refuse_connects:
                            node.connect_failed(a.peer, now)
                            continue
                        ca, cb = next(self.ids), next(self.ids)
                        self.links[(name, ca)] = (target, cb)
                        self.links[(target, cb)] = (name, ca)
                        self.nodes[target].connection_made(cb, None, now, "127.0.0.1")
                        node.connection_made(ca, a.peer, now, "127.0.0.1")
                    elif isinstance(a, Send):
                        self._deliver(name, a.conn, a.data, now)
                    elif isinstance(a, Close):
                        self._close(name, a.conn, now)
                self.events[name] += node.events()
            if not moved:
                return

    def advance(self, start, end, step=0.25):
        """Drive every node's timers from `start` to `end`."""
        now = start
        while now <= end:
            for name, node in self.nodes.items():
                if name in self.dead:
                    continue
                t = node.get_timer()
                if t is not None and t <= now:
                    node.handle_timer(now)
            self.run(now)
            now += step
        return now
