"""The worker's per-datagram bookkeeping (io/worker.py): its counters and the Source kept
per UDP peer address. No event loop, no sockets."""

from __future__ import annotations

import json

import sipedge.io.worker as worker_mod
from sipedge.io.worker import Stats, Worker
from sipedge.sip.proxy import Source


def test_stats_count_from_zero_like_a_counter():
    stats = Stats()
    assert stats["rcv_req_INVITE"] == 0
    assert "rcv_req_INVITE" not in stats  # reading does not add the key
    stats["rcv_req_INVITE"] += 1
    stats["rcv_req_INVITE"] += 1
    assert stats == {"rcv_req_INVITE": 2}
    assert json.loads(json.dumps(dict(stats))) == {"rcv_req_INVITE": 2}  # write_stats


def test_udp_source_is_kept_per_address_and_bounded(monkeypatch):
    monkeypatch.setattr(worker_mod, "UDP_SOURCE_CACHE_ENTRIES", 2)
    w = Worker.__new__(Worker)  # only the cache is used
    w._udp_sources = {}
    a, b, c = ("192.0.2.1", 5060), ("192.0.2.2", 5060), ("2001:db8::1", 5062, 0, 0)
    src = w._udp_source(a, 0)
    assert src == Source("udp", "192.0.2.1", 5060, 0)
    assert w._udp_sources[a] is src
    assert w._udp_source(a, 1).listener == 1  # the same peer on another listener
    w._udp_source(b, 0)
    assert w._udp_source(c, 0) == Source("udp", "2001:db8::1", 5062, 0)
    assert list(w._udp_sources) == [b, c]  # the oldest made is forgotten first
