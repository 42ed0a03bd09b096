"""The location and subscriber database: plain sqlite3, WAL, one transaction per change.

Blocking calls: the event loop uses it through `aio.AsyncStore`, which runs every call in a
dedicated thread. Each `Store` owns one connection and must stay in the thread that opened it.

Crash safety: WAL journal, `synchronous=FULL` by default (a committed REGISTER survives a power
cut; `normal` may lose the last commits but never leaves a torn database). Every REGISTER is
applied by `update_aor()` inside one `BEGIN IMMEDIATE` transaction, so two workers saving the
same AOR serialise and a kill mid-write leaves either the old or the new binding set.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Callable, Iterable

from .. import ReplySpec
from .core import Binding, RegisterOutcome

SCHEMA_VERSION = 1

_LOCATION = """
CREATE TABLE IF NOT EXISTS {db}.location (
    aor         TEXT    NOT NULL,
    contact_key TEXT    NOT NULL,
    contact     TEXT    NOT NULL,
    expires_at  REAL    NOT NULL,
    q           INTEGER NOT NULL DEFAULT 1000,
    call_id     TEXT    NOT NULL DEFAULT '',
    cseq        INTEGER NOT NULL DEFAULT 0,
    path        TEXT    NOT NULL DEFAULT '[]',
    received    TEXT    NOT NULL DEFAULT '',
    transport   TEXT    NOT NULL DEFAULT 'udp',
    socket      TEXT    NOT NULL DEFAULT '',
    nat         INTEGER NOT NULL DEFAULT 0,
    user_agent  TEXT    NOT NULL DEFAULT '',
    instance    TEXT    NOT NULL DEFAULT '',
    reg_id      INTEGER NOT NULL DEFAULT 0,
    params      TEXT    NOT NULL DEFAULT '',
    updated     REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, contact_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {db}.location_expires ON location (expires_at);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriber (
    username   TEXT NOT NULL,
    domain     TEXT NOT NULL,
    ha1_md5    TEXT NOT NULL DEFAULT '',
    ha1_sha256 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (username, domain)
) WITHOUT ROWID;
"""

_LOC_META = """
CREATE TABLE IF NOT EXISTS loc.loc_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = ("aor", "contact_key", "contact", "expires_at", "q", "call_id", "cseq", "path",
            "received", "transport", "socket", "nat", "user_agent", "instance", "reg_id",
            "params", "updated")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM {loc}"
_UPSERT = ("INSERT OR REPLACE INTO {loc} (" + ", ".join(_COLUMNS) + ") VALUES (" +
           ", ".join("?" * len(_COLUMNS)) + ")")


class StoreError(Exception):
    """The database cannot be opened or has an unknown schema."""


def _row(b: Binding) -> tuple:
    path = json.dumps(list(b.path)) if b.path else "[]"
    return (b.aor, b.key, b.contact, b.expires_at, b.q, b.call_id, b.cseq, path,
            b.received, b.transport, b.socket, int(b.nat), b.user_agent, b.instance, b.reg_id,
            b.params, b.updated)


def _binding(r: tuple) -> Binding:
    return Binding(aor=r[0], contact=r[2], expires_at=r[3], q=r[4], call_id=r[5], cseq=r[6],
                   path=tuple(json.loads(r[7])) if r[7] != "[]" else (), received=r[8],
                   transport=r[9], socket=r[10],
                   nat=bool(r[11]), user_agent=r[12], instance=r[13], reg_id=r[14],
                   params=r[15], updated=r[16])


class Store:
    """`location_path`: keep the location table in that database instead (a file in RAM,
    shared by the workers: `[registrar] storage` memory and write-back); subscribers and
    secrets stay in `path`."""

    def __init__(self, path: str | Path, *, synchronous: str = "full",
                 busy_timeout_s: float = 5.0, location_path: str | None = None) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError("synchronous must be full or normal")
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a clear "cannot start", not a traceback
                raise StoreError(f"{self.path}: cannot create its directory: "
                                 f"{exc.strerror or exc}") from None
        # autocommit mode: transactions are explicit BEGIN ... COMMIT
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self.separate_location = location_path is not None
        db = "loc" if self.separate_location else "main"
        self._loc = f"{db}.location"
        self._select = _SELECT.format(loc=self._loc)
        self._select_aor = self._select + " WHERE aor = ?"
        self._upsert = _UPSERT.format(loc=self._loc)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            if self.separate_location:
                self._db.execute("ATTACH DATABASE ? AS loc", (location_path,))
                self._db.execute("PRAGMA loc.journal_mode=WAL")
                self._db.execute("PRAGMA loc.synchronous=OFF")  # RAM: nothing to sync
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than "
                                 f"{SCHEMA_VERSION}")
            # one script, one transaction: executescript() runs outside Python's own
            # transaction handling
            extra = _LOCATION.format(db="loc") + _LOC_META if self.separate_location else ""
            self._db.executescript("BEGIN IMMEDIATE;" + _LOCATION.format(db="main") + _SCHEMA +
                                   extra + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _transaction(self, immediate: bool = True):
        return _Tx(self._db, immediate)

    # -- location -----------------------------------------------------------------

    def bindings(self, aor: str) -> list[Binding]:
        """Every stored binding of the AOR, expired ones included."""
        rows = self._db.execute(self._select_aor, (aor,)).fetchall()
        return [_binding(r) for r in rows]

    def live_bindings(self, aor: str, now: float) -> list[Binding]:
        rows = self._db.execute(self._select + " WHERE aor = ? AND expires_at > ?",
                                (aor, now)).fetchall()
        return [_binding(r) for r in rows]

    def all_bindings(self, now: float | None = None) -> list[Binding]:
        if now is None:
            rows = self._db.execute(self._select + " ORDER BY aor, contact").fetchall()
        else:
            rows = self._db.execute(self._select + " WHERE expires_at > ? ORDER BY aor, contact",
                                    (now,)).fetchall()
        return [_binding(r) for r in rows]

    def nat_bindings(self, now: float) -> list[Binding]:
        rows = self._db.execute(self._select + " WHERE nat = 1 AND expires_at > ?",
                                (now,)).fetchall()
        return [_binding(r) for r in rows]

    def update_aor(self, aor: str, compute: Callable[[list[Binding]], RegisterOutcome],
                   max_aors: int | None = None) -> RegisterOutcome:
        """Read the AOR's bindings, let `compute` decide, write its changes: one transaction.
        Nothing is written unless the outcome is a 200. With `max_aors`, a new AOR is
        refused (503) once the table holds that many (registration without subscribers:
        the AORs are outsiders' choice)."""
        with self._transaction():
            existing = self.bindings(aor)
            outcome = compute(existing)
            if outcome.ok and max_aors is not None and not existing and outcome.upserts:
                count = self._db.execute(f"SELECT COUNT(DISTINCT aor) FROM {self._loc}"
                                         ).fetchone()[0]
                if count >= max_aors:
                    return RegisterOutcome(ReplySpec(503, "Location Table Full",
                                                     (("Retry-After", "60"),)))
            if outcome.ok:
                self._write(aor, outcome.upserts, outcome.deletes)
        return outcome

    def _write(self, aor: str, upserts: Iterable[Binding], deletes: Iterable[str]) -> None:
        if deletes:  # a refresh deletes nothing: no statement for it
            self._db.executemany(f"DELETE FROM {self._loc} WHERE aor = ? AND contact_key = ?",
                                 [(aor, k) for k in deletes])
        if upserts:
            self._db.executemany(self._upsert, [_row(b) for b in upserts])

    def put_bindings(self, bindings: Iterable[Binding]) -> None:
        with self._transaction():
            self._db.executemany(self._upsert, [_row(b) for b in bindings])

    def delete_aor(self, aor: str) -> int:
        with self._transaction():
            return self._db.execute(f"DELETE FROM {self._loc} WHERE aor = ?", (aor,)).rowcount

    def delete_contact(self, aor: str, contact_key: str) -> int:
        with self._transaction():
            return self._db.execute(f"DELETE FROM {self._loc} WHERE aor = ? AND contact_key = ?",
                                    (aor, contact_key)).rowcount

    def purge_expired(self, now: float) -> int:
        with self._transaction():
            return self._db.execute(f"DELETE FROM {self._loc} WHERE expires_at <= ?",
                                    (now,)).rowcount

    def aor_count(self, now: float) -> int:
        return self._db.execute(f"SELECT COUNT(DISTINCT aor) FROM {self._loc} WHERE expires_at > ?",
                                (now,)).fetchone()[0]

    # -- storage modes (memory, write-back) ------------------------------------------

    def load_location(self, now: float) -> int:
        """Write-back start: copy the saved live bindings into the RAM table, once per RAM
        database (the first worker to start does it; a restarted worker finds it done)."""
        if not self.separate_location:
            return 0
        with self._transaction():
            if self._db.execute("SELECT 1 FROM loc.loc_meta WHERE key = 'loaded'").fetchone():
                return 0
            n = self._db.execute("INSERT OR IGNORE INTO loc.location SELECT * FROM "
                                 "main.location WHERE expires_at > ?", (now,)).rowcount
            self._db.execute("INSERT INTO loc.loc_meta VALUES ('loaded', 1)")
            return n

    def flush_location(self, now: float) -> int:
        """Write-back: replace the saved bindings by the RAM table's live ones (one
        transaction: a power cut leaves the previous or the new set)."""
        if not self.separate_location:
            return 0
        with self._transaction():
            self._db.execute("DELETE FROM main.location")
            return self._db.execute("INSERT INTO main.location SELECT * FROM loc.location "
                                    "WHERE expires_at > ?", (now,)).rowcount

    # -- subscribers --------------------------------------------------------------

    def sync_subscribers(self, entries: Iterable[tuple[str, str, str, str]]) -> tuple[int, int]:
        """Make the subscribers declared in the config file (username, domain, ha1_md5,
        ha1_sha256) present; remove those the config declared last time and no longer
        does. Subscribers added by RPC are left alone. Returns (written, removed)."""
        entries = list(entries)
        for user, domain, md5, sha in entries:
            _check_subscriber(user, domain, md5, sha)
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'config_subscribers'"
                                   ).fetchone()
            before = {tuple(x) for x in json.loads(row[0])} if row else set()
            now = {(u, d.lower()) for u, d, _, _ in entries}
            removed = 0
            for user, domain in sorted(before - now):
                removed += self._db.execute("DELETE FROM subscriber WHERE username = ? AND "
                                            "domain = ?", (user, domain)).rowcount
            self._db.executemany("INSERT OR REPLACE INTO subscriber VALUES (?, ?, ?, ?)",
                                 [(u, d.lower(), m.lower(), h.lower())
                                  for u, d, m, h in entries])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('config_subscribers', ?)",
                             (json.dumps(sorted(now)),))
        return len(entries), removed

    def add_subscriber(self, username: str, domain: str, *, ha1_md5: str = "",
                       ha1_sha256: str = "") -> None:
        """Add or replace a subscriber (HA1 values only; passwords are never stored)."""
        _check_subscriber(username, domain, ha1_md5, ha1_sha256)
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO subscriber VALUES (?, ?, ?, ?)",
                             (username, domain.lower(), ha1_md5.lower(), ha1_sha256.lower()))

    def remove_subscriber(self, username: str, domain: str) -> bool:
        with self._transaction():
            return self._db.execute("DELETE FROM subscriber WHERE username = ? AND domain = ?",
                                    (username, domain.lower())).rowcount > 0

    def subscribers(self, domain: str | None = None) -> list[dict]:
        """Username, domain and which HA1 kinds are present (never the values)."""
        sql = "SELECT username, domain, ha1_md5 != '', ha1_sha256 != '' FROM subscriber"
        args: tuple = ()
        if domain is not None:
            sql += " WHERE domain = ?"
            args = (domain.lower(),)
        rows = self._db.execute(sql + " ORDER BY domain, username", args).fetchall()
        return [{"username": u, "domain": d,
                 "algorithms": [a for a, has in (("MD5", m), ("SHA-256", s)) if has]}
                for u, d, m, s in rows]

    def subscriber_exists(self, username: str, domain: str) -> bool:
        return subscriber_exists(self._db, username, domain)

    def get_ha1(self, username: str, domain: str, algorithm: str) -> str | None:
        """HA1 for the base algorithm (MD5 or SHA-256); None if unknown or not provisioned."""
        return get_ha1(self._db, username, domain, algorithm)

    # -- shared secrets -----------------------------------------------------------

    def get_or_create_secret(self, name: str, nbytes: int = 32) -> bytes:
        """A random secret kept in the database, created on first use: every worker and every
        restart sees the same value (the auth nonce key when `[auth] secret` is empty)."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                             (name, secrets.token_bytes(nbytes)))
            return bytes(self._db.execute("SELECT value FROM meta WHERE key = ?",
                                          (name,)).fetchone()[0])

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _check_subscriber(username: str, domain: str, ha1_md5: str, ha1_sha256: str) -> None:
    if not username or not domain:
        raise ValueError("username and domain are required")
    if not ha1_md5 and not ha1_sha256:
        raise ValueError("at least one HA1 value is required")
    for v, n in ((ha1_md5, 32), (ha1_sha256, 64)):
        if v and (len(v) != n or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError(f"HA1 must be {n} hex digits")


class _Tx:
    def __init__(self, db: sqlite3.Connection, immediate: bool) -> None:
        self.db = db
        self.immediate = immediate

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


# -- subscriber reads: on a Store's connection, or on the event loop's read-only one (aio) --

_HA1_COLUMN = {"MD5": "ha1_md5", "SHA-256": "ha1_sha256"}


def subscriber_exists(db: sqlite3.Connection, username: str, domain: str) -> bool:
    return db.execute("SELECT 1 FROM subscriber WHERE username = ? AND domain = ?",
                      (username, domain.lower())).fetchone() is not None


def get_ha1(db: sqlite3.Connection, username: str, domain: str, algorithm: str) -> str | None:
    column = _HA1_COLUMN.get(algorithm)
    if column is None:
        return None
    row = db.execute(f"SELECT {column} FROM subscriber WHERE username = ? AND domain = ?",
                     (username, domain.lower())).fetchone()
    return row[0] if row and row[0] else None
