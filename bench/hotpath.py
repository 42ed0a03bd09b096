#!/usr/bin/env python3
"""The per-message hot path without sockets: a fixed list of SIP datagrams through one
worker's message handling (`Worker.on_datagram`), sends collected instead of sent.

Bytes in, actions out: the worker is built as the bench's proxy builds it (same config
templates as bench/configs/sipedge-{stateless,stateful}.toml), never started, and its UDP
listener is a collector. A small in-process caller and callee play the bench's SIPp call
(INVITE, 180, 200, ACK, BYE, 200; the callee copies Record-Route, the caller routes ACK and
BYE by it), so the messages are the ones `bench/run.py` sends; Content-Length is padded
where SIPp's `[len]` pads it (`Content-Length:   137`: the INVITE and the 200 with SDP).

    PYTHONPATH=app python bench/hotpath.py --mode stateless --calls 500          # us/msg
    PYTHONPATH=app python bench/hotpath.py --mode stateful --profile | head -40  # cProfile
    PYTHONPATH=app python bench/hotpath.py --mode stateful --icount --calls 100  # Ir/call
    PYTHONPATH=app python bench/hotpath.py --mode dispatcher --icount            # 3 callees

`--mode dispatcher` is the stateful call through sipedge-dispatcher.toml and its route
(round robin over the 3 callees of set 1).

`--mode registration` is one registration of `bench/run.py --mode registration` (its
sipedge-registration.toml and the shipped registrar route, bindings in SQLite with
synchronous=full): REGISTER -> 401, REGISTER with the digest response the driver computes
-> 200, for fresh users of the bench's subscribers (each "call" is one registration, 2
datagrams in). The database thread answers asynchronously, so this mode runs the event loop
until each reply is sent. Nonces stay valid for a day here (the replay comes later).

`--record FILE` keeps the datagrams of --calls calls; `--replay FILE` feeds them to a fresh
worker (after --warmup calls of its own), so the caller and callee cost nothing there.
`--icount` records, then runs the replay under valgrind's callgrind with all calls and with
none: instructions per call = (Ir(N) - Ir(0)) / N.
Timings on a busy machine are indicative only; instruction counts are not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):  # PYTHONPATH=/other/tree/app measures that tree
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "app"))

PROXY = ("127.0.0.1", 25010)
CALLER = ("127.0.0.1", 25040)
CALLEE = ("127.0.0.1", 25022)
# dispatcher mode: the 3 callees of set 1 (bench/configs/sipedge-dispatcher.toml)
CALLEES = (CALLEE, ("127.0.0.1", 25023), ("127.0.0.1", 25024))

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def bench_file(name: str, workdir: str) -> str:
    """A file of bench/configs (the one run.py measures), placeholders filled for this driver."""
    with open(os.path.join(CONFIGS, name)) as f:
        text = f.read()
    for key, value in (("WORKERS", "1"), ("WORKDIR", workdir), ("HOST", "127.0.0.1"),
                       ("PORT", "25010"), ("NEXT_HOST", CALLEE[0]), ("NEXT_PORT", str(CALLEE[1])),
                       ("ALG", "round_robin"), ("REPO", os.path.dirname(HERE)),
                       ("DB_PATH", os.path.join(workdir, "location.sqlite")),
                       ("DB_SYNCHRONOUS", "full")):
        text = text.replace(f"@{key}@", value)
    for i, (host, port) in enumerate(CALLEES, 1):
        text = text.replace(f"@NEXT_HOST_{i}@", host).replace(f"@NEXT_PORT_{i}@", str(port))
    return text


SDP = (b"v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n")


class Collector:
    """Stands in for the worker's UDP listener: remembers what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


class WaitingCollector(Collector):
    """A Collector whose sends wake a waiting driver (replies sent from a route task)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: asyncio.Future | None = None

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_send(self) -> None:
        """Run the loop until something was sent (the database thread wakes it, no spin)."""
        if not self.sent:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None


# registration mode: the bench's subscribers (benchlib/modes.py users(): u000000, pw000000x)
SUBSCRIBERS = 2000
AUTH_SECRET = "00" * 16  # the nonce key the main process would hand the worker
# recorded registrations use users the warmup does not (each recorded one is a first
# registration, as in bench/run.py --instructions), and Call-IDs and branches of their own
RECORD_FROM = 1000


def make_subscribers(path: str) -> None:
    import hashlib

    from sipedge.modules.registrar.store import Store

    s = Store(path, synchronous="normal")
    for i in range(SUBSCRIBERS):
        u = f"u{i:06d}"
        s.add_subscriber(u, "localhost",
                         ha1_md5=hashlib.md5(f"{u}:localhost:pw{i:06d}x".encode()).hexdigest())
    s.close()


async def make_worker(mode: str, workdir: str, subscribers: str | None = None):
    """`subscribers`: registration mode: a database made by make_subscribers to copy."""
    from sipedge.config import load_text
    from sipedge.io.worker import Worker
    from sipedge.script.loader import load_script

    text = bench_file(f"sipedge-{mode}.toml", workdir)
    secrets_ = {}
    if mode == "registration":
        text = text.replace("[auth]\n", "[auth]\nnonce_expires_s = 86400\n")
        db = os.path.join(workdir, "location.sqlite")
        for suffix in ("", "-wal", "-shm"):  # a second worker of this process: a fresh db
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        if subscribers:
            import shutil

            shutil.copyfile(subscribers, db)
        else:
            make_subscribers(db)
        secrets_["auth"] = AUTH_SECRET
    cfg_path = os.path.join(workdir, "sipedge.toml")
    with open(cfg_path, "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "route.py"), "w") as f:
        f.write(bench_file(f"sipedge-{'dispatcher' if mode == 'dispatcher' else 'stateful'}"
                           "-route.py", workdir))
    real_token_hex = secrets.token_hex
    secrets.token_hex = lambda n=None: "ab"  # a fixed transaction branch salt: replayable
    try:
        w = Worker(0, 1, load_text(text, cfg_path), "hotpath", secrets=secrets_)
    finally:
        secrets.token_hex = real_token_hex
    await w.modules.start()  # dispatcher: its Dispatcher and ksr.dispatcher
    if w.script_path:
        w.script = load_script(w.script_path, {"ksr": w.modules.ksr})
    w.udp = {0: WaitingCollector() if mode == "registration" else Collector()}
    return w


# -- the caller and the callee ------------------------------------------------------------

def _headers(data: bytes, name: bytes) -> list[bytes]:
    return re.findall(rb"(?im)^" + name + rb":[ \t]*([^\r\n]*)", data.split(b"\r\n\r\n")[0])


def _reply(req: bytes, status: bytes, tag: bytes, body: bytes = b"", *,
           callee: tuple = CALLEE) -> bytes:
    lines = [b"SIP/2.0 " + status]
    lines += [b"Via: " + v for v in _headers(req, b"via")]
    if not status.startswith(b"200 OK") or b"INVITE" in _headers(req, b"cseq")[0]:
        lines += [b"Record-Route: " + v for v in _headers(req, b"record-route")]
    lines.append(b"From: " + _headers(req, b"from")[0])
    to = _headers(req, b"to")[0]
    lines.append(b"To: " + (to if b"tag=" in to else to + b";tag=" + tag))
    lines.append(b"Call-ID: " + _headers(req, b"call-id")[0])
    lines.append(b"CSeq: " + _headers(req, b"cseq")[0])
    lines.append(b"Contact: <sip:callee@%s:%d;transport=UDP>" % (callee[0].encode(), callee[1]))
    if body:
        lines.append(b"Content-Type: application/sdp")
    # SIPp's [len] pads to 5 digits (bench/scenarios/stateless/uas.xml: the 200 with SDP)
    lines.append(b"Content-Length: %5d" % len(body) if body else b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _invite(n: int) -> bytes:
    host, port = PROXY
    me = b"%s:%d" % (CALLER[0].encode(), CALLER[1])
    return (b"INVITE sip:bench@%s:%d SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%d-1-0\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: \"bench\" <sip:caller@%s>;tag=%du4242\r\n"
            b"To: <sip:bench@%s:%d>\r\n"
            b"Call-ID: %d-4242@127.0.0.1\r\n"
            b"CSeq: 1 INVITE\r\n"
            b"Contact: <sip:caller@%s;transport=UDP>\r\n"
            b"Subject: bench\r\n"
            b"Content-Type: application/sdp\r\n"
            b"Content-Length: %5d\r\n\r\n" % (host.encode(), port, me, n, me, n, host.encode(),
                                             port, n, me, len(SDP))) + SDP


def _in_dialog(method: bytes, n: int, ok: bytes, cseq: int) -> bytes:
    me = b"%s:%d" % (CALLER[0].encode(), CALLER[1])
    contact = re.search(rb"<([^>]*)>", _headers(ok, b"contact")[0]).group(1)
    routes = _headers(ok, b"record-route")[::-1]
    route = b"".join(b"Route: " + r + b"\r\n" for r in routes)
    return (b"%s %s SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%d-%d-%s\r\n"
            b"%s"
            b"Max-Forwards: 70\r\n"
            b"From: \"bench\" <sip:caller@%s>;tag=%du4242\r\n"
            b"To: %s\r\n"
            b"Call-ID: %d-4242@127.0.0.1\r\n"
            b"CSeq: %d %s\r\n"
            b"Content-Length: 0\r\n\r\n" % (method, contact, me, n, cseq, method, route, me, n,
                                            _headers(ok, b"to")[0], n, cseq, method))


def _take(col: Collector, to: tuple, status: bytes | None = None) -> tuple[bytes, tuple]:
    """The first message sent to `to` (CALLEE: to any callee), and where it went."""
    for i, (data, addr) in enumerate(col.sent):
        if (addr == to or (to == CALLEE and addr in CALLEES)) and (
                status is None or data.startswith(b"SIP/2.0 " + status)):
            del col.sent[i]
            return data, addr
    raise SystemExit(f"hotpath: expected a message to {to} {status!r}; sent: "
                     f"{[(d[:40], a) for d, a in col.sent]}")


_call_numbers = iter(range(1, 1 << 30))


def run_calls(w, ncalls: int, record: list | None = None) -> None:
    """Play `ncalls` bench calls through the worker; append every input datagram to record.
    Every call of the process gets its own number (Call-ID, tags, branches)."""
    col: Collector = w.udp[0]

    def feed(data: bytes, addr: tuple) -> None:
        if record is not None:
            record.append((data, addr))
        w.on_datagram(data, addr, 0)

    for _ in range(ncalls):
        n = next(_call_numbers)
        feed(_invite(n), CALLER)
        inv, callee = _take(col, CALLEE)
        tag = b"%ds4242" % n
        feed(_reply(inv, b"180 Ringing", tag, callee=callee), callee)
        feed(_reply(inv, b"200 OK", tag, SDP, callee=callee), callee)
        _take(col, CALLER, b"180")
        ok, _ = _take(col, CALLER, b"200")
        feed(_in_dialog(b"ACK", n, ok, 1), CALLER)
        _take(col, callee)
        feed(_in_dialog(b"BYE", n, ok, 2), CALLER)
        bye, _ = _take(col, callee)
        feed(_reply(bye, b"200 OK", tag, callee=callee), callee)
        _take(col, CALLER, b"200")
        col.sent.clear()  # 100 Trying


def _register(n: int, auth: bytes = b"") -> bytes:
    """The bench's REGISTER (bench/scenarios/registration/uac.xml) of registration n."""
    host, port = PROXY
    me = b"%s:%d" % (CALLER[0].encode(), CALLER[1])
    user = b"u%06d" % (n % SUBSCRIBERS)
    return (b"REGISTER sip:%s:%d SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%d-%d-0\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: <sip:%s@localhost>;tag=%dr4242\r\n"
            b"To: <sip:%s@localhost>\r\n"
            b"Call-ID: %d-4242@127.0.0.1\r\n"
            b"CSeq: %d REGISTER\r\n"
            b"Contact: <sip:%s@%s>\r\n"
            b"%s"
            b"Expires: 3600\r\n"
            b"User-Agent: sipedge-bench\r\n"
            b"Content-Length: 0\r\n\r\n" % (host.encode(), port, me, n, 2 if auth else 1,
                                               user, n, user, n, 2 if auth else 1, user, me,
                                               auth))


def _authorization(n: int, challenge: bytes) -> bytes:
    """The Authorization header SIPp answers a 401 with (MD5, qop=auth, nc=1)."""
    import hashlib

    def md5(*parts: str) -> str:
        return hashlib.md5(":".join(parts).encode()).hexdigest()

    p = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.decode()))
    i = n % SUBSCRIBERS
    user, uri, cnonce = f"u{i:06d}", "sip:%s:%d" % PROXY, "%08x" % n
    ha1 = md5(user, p["realm"], f"pw{i:06d}x")
    response = md5(ha1, p["nonce"], "00000001", cnonce, "auth", md5("REGISTER", uri))
    return (f'Authorization: Digest username="{user}",realm="{p["realm"]}",cnonce="{cnonce}",'
            f'nc=00000001,qop=auth,uri="{uri}",nonce="{p["nonce"]}",response="{response}",'
            f'algorithm=MD5\r\n').encode()


async def run_registrations(w, count: int, record: list | None = None, *,
                            first: int = 1) -> None:
    """`count` registrations (401, then 200) of users first, first + 1, ..."""
    col: WaitingCollector = w.udp[0]
    for n in range(first, first + count):
        data = _register(n)
        if record is not None:
            record.append((data, CALLER))
        w.on_datagram(data, CALLER, 0)
        await col.next_send()
        challenge = _headers(_take(col, CALLER, b"401")[0], b"www-authenticate")[0]
        data = _register(n, _authorization(n, challenge))
        if record is not None:
            record.append((data, CALLER))
        w.on_datagram(data, CALLER, 0)
        await col.next_send()
        _take(col, CALLER, b"200")
        col.sent.clear()


async def replay_async(w, inputs: list) -> int:
    """`replay` for registrations: each datagram's reply is awaited before the next one."""
    on = w.on_datagram
    col: WaitingCollector = w.udp[0]
    n = 0
    for data, addr in inputs:
        on(data, addr, 0)
        await col.next_send()
        n += len(col.sent)
        col.sent.clear()
    return n


MESSAGES_IN = {"registration": 2}  # datagrams in per call; the calls: 6


async def warm_up(w, mode: str, count: int) -> None:
    if mode == "registration":
        await run_registrations(w, count)
    else:
        run_calls(w, count)


async def play(w, mode: str, count: int, record: list) -> None:
    """`count` calls (registrations) recorded into `record`, numbered apart from warm_up's."""
    if mode == "registration":
        await run_registrations(w, count, record, first=RECORD_FROM)
        return
    run_calls(w, count, record)


def replay(w, inputs: list) -> int:
    on = w.on_datagram
    for data, addr in inputs:
        on(data, addr, 0)
    col = w.udp[0]
    n = len(col.sent)
    col.sent.clear()
    return n


def record(mode: str, ncalls: int, path: str, warmup: int,
           subscribers: str | None = None) -> None:
    """Play `ncalls` calls and keep every datagram the worker received, in order. The
    `warmup` calls the replay plays first are played first here too (not kept): the replayed
    calls then get the numbers, and their branches the counters, they had when recorded (a
    replayed call numbered like a warmup call would be a retransmission of it)."""
    import pickle

    async def go() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            inputs: list = []
            w = await make_worker(mode, tmp, subscribers)
            await warm_up(w, mode, warmup)
            await play(w, mode, ncalls, inputs)
            with open(path, "wb") as f:
                pickle.dump(inputs, f)
    asyncio.run(go())


async def replay_any(w, mode: str, inputs: list) -> int:
    if mode == "registration":
        return await replay_async(w, inputs)
    return replay(w, inputs)


async def main_async(a) -> None:
    per_call = MESSAGES_IN.get(a.mode, 6)
    with tempfile.TemporaryDirectory() as tmp:
        w = await make_worker(a.mode, tmp, a.subscribers)
        await warm_up(w, a.mode, a.warmup)  # imports, caches, first-call costs
        if a.replay is not None:
            import pickle

            with open(a.replay, "rb") as f:
                inputs = pickle.load(f)
            if a.count is not None:
                inputs = inputs[:a.count * per_call]
            if a.dump:
                for data, _ in inputs[:per_call]:
                    print(data.decode(errors="replace"))
            sent = await replay_any(w, a.mode, inputs)
            replies = {k: v for k, v in w.stats.items() if k.startswith("snd_rpl")}
            print(f"replayed {len(inputs)} datagrams, {sent} sent (replies with the warmup's: "
                  f"{replies})", file=sys.stderr)
            return
        if a.profile:
            import cProfile
            import pstats

            inputs = []
            await play(w, a.mode, a.calls, inputs)
            w = await make_worker(a.mode, tmp, a.subscribers)
            await warm_up(w, a.mode, a.warmup)
            prof = cProfile.Profile()
            prof.enable()
            await replay_any(w, a.mode, inputs)
            prof.disable()
            pstats.Stats(prof).sort_stats(a.sort).print_stats(a.top)
            return
        inputs = []
        await play(w, a.mode, a.calls, inputs)
        w = await make_worker(a.mode, tmp, a.subscribers)
        await warm_up(w, a.mode, a.warmup)
        t0 = time.perf_counter()
        sent = await replay_any(w, a.mode, inputs)
        dt = time.perf_counter() - t0
        print(f"{a.mode}: {len(inputs)} datagrams in, {sent} out, "
              f"{dt / a.calls * 1e6:.1f} us/call, {dt / len(inputs) * 1e6:.1f} us/message "
              f"(wall clock, indicative)")


def icount(a) -> None:
    """Instructions per call under callgrind: (replay N calls) - (replay 0 calls), over N.
    The calls are recorded first, outside valgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        subscribers = None
        if a.mode == "registration":  # made once, copied by every run
            subscribers = os.path.join(tmp, "subscribers.sqlite")
            make_subscribers(subscribers)
        rec = os.path.join(tmp, "calls.pickle")
        record(a.mode, a.calls, rec, a.warmup, subscribers)

        def ir(n: int) -> int:
            out = os.path.join(tmp, f"cg.{n}")
            p = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 sys.executable, os.path.abspath(__file__), "--mode", a.mode,
                 "--warmup", str(a.warmup), "--replay", rec, "--count", str(n)]
                + (["--subscribers", subscribers] if subscribers else []),
                check=True, capture_output=True, text=True)
            if a.verbose:
                print(p.stderr.strip().splitlines()[-1], file=sys.stderr)
            with open(out) as f:  # one file: all threads (the database thread too)
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            raise SystemExit("no callgrind totals")
        base = ir(0)
        full = ir(a.calls)
    per_call = (full - base) / a.calls
    per_msg = MESSAGES_IN.get(a.mode, 6)
    what = "registration" if a.mode == "registration" else "call"
    print(f"{a.mode}: {per_call:,.0f} instructions per {what}, {per_call / per_msg:,.0f} per "
          f"message in ({a.calls} {what}s replayed under callgrind)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("stateless", "stateful", "dispatcher", "registration"),
                    default="stateless")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--replay", metavar="FILE", help="replay datagrams recorded by --record")
    ap.add_argument("--count", type=int, help="with --replay: only the first N calls")
    ap.add_argument("--record", metavar="FILE", help="record --calls calls' datagrams")
    ap.add_argument("--profile", action="store_true", help="cProfile of --calls calls")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--icount", action="store_true", help="instructions per call (callgrind)")
    ap.add_argument("--dump", action="store_true", help="print the first call's inputs")
    ap.add_argument("--subscribers", metavar="FILE", help=argparse.SUPPRESS)  # icount's copy
    ap.add_argument("--verbose", action="store_true", help="--icount: each replay's summary")
    a = ap.parse_args()
    if a.icount:
        icount(a)
        return
    if a.record:
        record(a.mode, a.calls, a.record, a.warmup, a.subscribers)
        return
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
