"""The SQLite location/subscriber store, on real database files in tmp_path."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sipedge.modules.registrar.core import Source, apply_register, parse_register
from sipedge.modules.registrar.params import RegistrarParams
from sipedge.modules.registrar.store import Store, StoreError
from sipmsg import request

P = RegistrarParams()
NOW = 1_700_000_000.0
APP = Path(__file__).parents[4] / "app"


def save(store: Store, aor_user: str, contacts: list[str], *, now=NOW, call_id="c1", cseq=1,
         extra=()):
    r = parse_register(request(to=f"<sip:{aor_user}@example.com>", contacts=contacts,
                               call_id=call_id, cseq=cseq, extra=list(extra)), P,
                       Source("192.0.2.1", 5060))
    return store.update_aor(r.aor, lambda existing: apply_register(r, existing, P, now))


def test_bindings_survive_reopening_the_database(tmp_path):
    db = tmp_path / "data" / "location.sqlite"
    s = Store(db)
    out = save(s, "alice", ["<sip:alice@192.0.2.1>;q=0.5", "<sip:alice@192.0.2.2>"],
               extra=["Path: <sip:edge.example.net;lr>", "Supported: path"])
    assert out.ok
    s.close()
    s = Store(db)
    live = s.live_bindings("alice@example.com", NOW + 1)
    assert sorted(b.contact for b in live) == ["sip:alice@192.0.2.1", "sip:alice@192.0.2.2"]
    b = next(b for b in live if b.q == 500)
    assert b.path == ("<sip:edge.example.net;lr>",) and b.received == "sip:192.0.2.1:5060"
    assert b.call_id == "c1" and b.cseq == 1
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # the ordering check works against what was stored before the restart
    assert save(s, "alice", ["<sip:alice@192.0.2.2>"], cseq=1).reply.status == 500
    s.close()


def test_failed_register_writes_nothing(tmp_path):
    s = Store(tmp_path / "l.sqlite")
    save(s, "bob", ["<sip:bob@192.0.2.1>"], cseq=5)
    out = save(s, "bob", ["<sip:bob@192.0.2.1>;expires=0", "<sip:bob@192.0.2.7>"], cseq=4)
    assert out.reply.status == 500
    assert [b.contact for b in s.bindings("bob@example.com")] == ["sip:bob@192.0.2.1"]


def test_compute_error_rolls_back(tmp_path):
    s = Store(tmp_path / "l.sqlite")
    save(s, "bob", ["<sip:bob@192.0.2.1>"])

    def boom(existing):
        s._db.execute("DELETE FROM location")
        raise RuntimeError("bug in compute")

    with pytest.raises(RuntimeError):
        s.update_aor("bob@example.com", boom)
    assert len(s.bindings("bob@example.com")) == 1


def test_purge_dump_and_delete(tmp_path):
    s = Store(tmp_path / "l.sqlite")
    save(s, "a", ["<sip:a@192.0.2.1>;expires=60"])
    save(s, "b", ["<sip:b@192.0.2.2>;expires=600"])
    assert s.aor_count(NOW) == 2
    assert [b.aor for b in s.all_bindings(NOW + 100)] == ["b@example.com"]
    assert s.purge_expired(NOW + 100) == 1
    assert len(s.all_bindings()) == 1
    assert s.delete_aor("b@example.com") == 1 and s.all_bindings() == []


def test_subscribers(tmp_path):
    s = Store(tmp_path / "l.sqlite")
    s.add_subscriber("alice", "Example.com", ha1_md5="a" * 32, ha1_sha256="b" * 64)
    assert s.get_ha1("alice", "example.com", "MD5") == "a" * 32
    assert s.get_ha1("alice", "EXAMPLE.com", "SHA-256") == "b" * 64
    assert s.get_ha1("alice", "example.com", "SHA-512-256") is None
    assert s.get_ha1("bob", "example.com", "MD5") is None
    assert s.subscriber_exists("alice", "example.com")
    assert s.subscribers() == [{"username": "alice", "domain": "example.com",
                                "algorithms": ["MD5", "SHA-256"]}]
    for bad in (dict(), dict(ha1_md5="xyz"), dict(ha1_sha256="a" * 32)):
        with pytest.raises(ValueError):
            s.add_subscriber("c", "example.com", **bad)


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "l.sqlite"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(StoreError):
        Store(db)


def test_not_a_database(tmp_path):
    db = tmp_path / "l.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(db)


def test_two_workers_saving_the_same_aor_serialise(tmp_path):
    db = tmp_path / "l.sqlite"
    Store(db).close()
    errors = []

    def worker(n: int) -> None:
        s = Store(db)
        try:
            for i in range(25):
                out = save(s, "shared", [f"<sip:w{n}@192.0.2.{n}>"], call_id=f"w{n}",
                           cseq=i + 1)
                assert out.ok, out.reply
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    s = Store(db)
    rows = s.bindings("shared@example.com")
    assert sorted((b.contact, b.cseq) for b in rows) == [
        (f"sip:w{n}@192.0.2.{n}", 25) for n in range(4)]


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {app!r})
    sys.path.insert(0, {here!r})
    from sipedge.modules.registrar.core import Source, apply_register, parse_register
    from sipedge.modules.registrar.params import RegistrarParams
    from sipedge.modules.registrar.store import Store
    from sipmsg import request
    P = RegistrarParams()
    s = Store({db!r})
    i = 0
    while True:
        # every REGISTER writes three contacts at once: a torn write would show up as 1 or 2
        contacts = [f"<sip:u{{i}}-{{k}}@192.0.2.{{k}}>" for k in range(3)]
        r = parse_register(request(to=f"<sip:u{{i}}@example.com>", contacts=contacts), P,
                           Source("192.0.2.1", 5060))
        s.update_aor(r.aor, lambda existing: apply_register(r, existing, P, 1.7e9))
        print(i, flush=True)  # only after COMMIT returned
        i += 1
""")


def test_killed_mid_write_leaves_a_consistent_database(tmp_path):
    db = tmp_path / "crash.sqlite"
    here = str(Path(__file__).parents[1])  # tests/unit/modules (sipmsg)
    code = CHILD.format(app=str(APP), here=here, db=str(db))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    committed = -1
    deadline = time.monotonic() + 10
    assert proc.stdout is not None
    while committed < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: the child never stops between commits
    proc.wait(5)
    assert committed >= 150, proc.stderr.read() if proc.stderr else ""
    s = Store(db)
    assert s.integrity_ok()
    per_aor: dict[str, int] = {}
    for b in s.all_bindings():
        per_aor[b.aor] = per_aor.get(b.aor, 0) + 1
    assert set(per_aor.values()) == {3}  # all or nothing per REGISTER
    # every REGISTER the child saw committed is there
    assert all(f"u{i}@example.com" in per_aor for i in range(committed + 1))
    s.close()


def test_shared_secret_is_created_once(tmp_path):
    a, b = Store(tmp_path / "l.sqlite"), Store(tmp_path / "l.sqlite")
    s1 = a.get_or_create_secret("auth.nonce")
    assert len(s1) == 32 and b.get_or_create_secret("auth.nonce") == s1
    a.close()
    b.close()
    assert Store(tmp_path / "l.sqlite").get_or_create_secret("auth.nonce") == s1


# ------------------------------------------------------------------ issue 14: storage modes

def test_memory_storage_keeps_bindings_in_the_ram_file_only(tmp_path):
    db, ram = tmp_path / "location.sqlite", tmp_path / "shm" / "loc.sqlite"
    ram.parent.mkdir()
    s = Store(db, location_path=str(ram))
    assert save(s, "alice", ["<sip:alice@192.0.2.1>"]).ok
    other = Store(db, location_path=str(ram))  # another worker sees it
    assert [b.contact for b in other.live_bindings("alice@example.com", NOW)] == [
        "sip:alice@192.0.2.1"]
    s.close()
    other.close()
    assert Store(db).all_bindings() == []  # nothing was written to the database
    ram.unlink()  # a reboot: the RAM is gone, and so are the bindings
    for extra in ("-wal", "-shm"):
        Path(str(ram) + extra).unlink(missing_ok=True)
    assert Store(db, location_path=str(ram)).all_bindings() == []


def test_write_back_saves_on_flush_and_loads_once_after_a_reboot(tmp_path):
    db, ram = tmp_path / "location.sqlite", tmp_path / "loc.sqlite"
    s = Store(db, location_path=str(ram))
    assert s.load_location(NOW) == 0
    save(s, "alice", ["<sip:alice@192.0.2.1>"])
    save(s, "bob", ["<sip:bob@192.0.2.2>"])
    assert Store(db).all_bindings() == []  # not yet written back
    assert s.flush_location(NOW) == 2
    save(s, "carol", ["<sip:carol@192.0.2.3>"])  # after the last flush: lost in a power cut
    s.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(ram) + suffix).unlink(missing_ok=True)
    s2 = Store(db, location_path=str(ram))
    assert s2.load_location(NOW) == 2
    assert s2.load_location(NOW) == 0  # once per RAM database (the other workers)
    assert sorted(b.aor for b in s2.all_bindings(NOW)) == ["alice@example.com",
                                                            "bob@example.com"]
    assert s2.load_location(NOW + 10**6) == 0


def test_config_subscribers_are_synced_and_removed_when_dropped(tmp_path):
    s = Store(tmp_path / "location.sqlite")
    s.add_subscriber("rpcuser", "example.com", ha1_md5="a" * 32)
    md5, sha = "0" * 32, "1" * 64
    assert s.sync_subscribers([("alice", "Example.com", md5, ""), ("bob", "example.com", "", sha)]) == (2, 0)
    assert s.get_ha1("alice", "example.com", "MD5") == md5
    assert s.get_ha1("bob", "example.com", "SHA-256") == sha
    assert s.sync_subscribers([("alice", "example.com", "2" * 32, "")]) == (1, 1)
    assert s.get_ha1("alice", "example.com", "MD5") == "2" * 32
    assert not s.subscriber_exists("bob", "example.com")
    assert s.subscriber_exists("rpcuser", "example.com")  # not the config's: left alone
    with pytest.raises(ValueError):
        s.sync_subscribers([("eve", "example.com", "xyz", "")])
    assert s.subscriber_exists("alice", "example.com")  # refused as a whole


def test_config_subscribers_validated_at_load():
    from sipedge.config.loader import load_text
    from sipedge.errors import ConfigError

    ok = load_text('[core]\nmodules = ["registrar"]\n[[registrar.subscriber]]\n'
                   f'username = "alice"\ndomain = "example.com"\nha1_md5 = "{"a" * 32}"\n')
    assert ok.registrar.subscriber[0].username == "alice"
    with pytest.raises(ConfigError) as info:
        load_text('[core]\nmodules = ["registrar"]\n[[registrar.subscriber]]\n'
                  'username = "alice"\ndomain = "example.com"\nha1_md5 = "nothex"\n'
                  '[[registrar.subscriber]]\nusername = "alice"\ndomain = "example.com"\n')
    text = str(info.value)
    assert "registrar.subscriber[0]" in text and "registrar.subscriber[1]" in text


def test_new_aors_beyond_max_aors_are_refused(tmp_path):
    """Without subscribers an outsider picks the AORs: their number is bounded."""
    s = Store(tmp_path / "location.sqlite")

    def reg(user, max_aors=3, cseq=1):
        r = parse_register(request(to=f"<sip:{user}@example.com>", cseq=cseq,
                                   contacts=[f"<sip:{user}@192.0.2.1>"]), P,
                           Source("192.0.2.1", 5060))
        return s.update_aor(r.aor, lambda existing: apply_register(r, existing, P, NOW),
                            max_aors)

    assert all(reg(f"u{i}").ok for i in range(3))
    full = reg("u3")
    assert (full.reply.status, full.reply.reason) == (503, "Location Table Full")
    assert reg("u1", cseq=2).ok  # a refresh of a known AOR still works
    assert s.aor_count(NOW) == 3
    assert reg("u3", None).ok  # no bound given: the subscriber table bounds the AORs


def test_a_database_directory_that_cannot_be_made_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create its directory"):
        Store(tmp_path / "file" / "sub" / "location.sqlite")
