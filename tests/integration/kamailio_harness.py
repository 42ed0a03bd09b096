"""A real Kamailio on 127.0.0.1 as the upstream that challenges and verifies our digest:
auth + auth_db (SQLite subscriber table) + registrar/usrloc (in memory), RPC over the ctl
module (kamcmd). Started per test with a generated config, stopped and restarted on demand.

Routing of the upstream:
- REGISTER: www_authorize (401), then save("location"); `min_expires` makes the 423 test.
- requests inside a dialog: loose_route + t_relay.
- a request to a user registered here (our outbound registration): lookup("location")
  and relayed without auth (the carrier calling the box);
- other requests to user `www*`: www_authorize (401 variant); otherwise proxy_authorize
  (407); then t_relay to the R-URI.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
MODULES = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules",
                            "/usr/lib/aarch64-linux-gnu/kamailio/modules",
                            "/usr/lib/kamailio/modules") if Path(p).is_dir()), "")
HAVE_KAMAILIO = (Path(KAMAILIO).exists() and bool(MODULES)
                 and Path(MODULES, "db_sqlite.so").exists()
                 and Path(MODULES, "auth_db.so").exists())

needs_kamailio = pytest.mark.skipif(not HAVE_KAMAILIO,
                                    reason="kamailio + kamailio-sqlite-modules not installed")

REALM = "carrier.test"

CFG = r"""#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{realm}"
mpath="{modules}/"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_sqlite.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{ctl}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", {min_expires})
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires_mode", 1)
modparam("auth_db", "db_url", "sqlite:///{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
modparam("auth_db", "use_domain", 0)
modparam("auth", "algorithm", "{algorithm}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    xlog("L_INFO", "KAM-REQ $rm $ru cseq=$cs from=$si:$sp\n");
    if (is_method("REGISTER")) {{
        if (!www_authorize("{realm}", "subscriber")) {{
            www_challenge("{realm}", "1");
            exit;
        }}
        xlog("L_INFO", "KAM-REGISTER-AUTHED $tu cseq=$cs expires=$hdr(Expires)\n");
        if (!save("location")) sl_reply_error();
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    if (registered("location")) {{
        # a call from the carrier side to a registered box: no auth
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
        xlog("L_INFO", "KAM-TO-REGISTERED $rm $ru\n");
        record_route();
        t_relay();
        exit;
    }}
    if ($rU =~ "^www") {{
        if (!www_authorize("{realm}", "subscriber")) {{ www_challenge("{realm}", "1"); exit; }}
    }} else if (!is_method("ACK")) {{
        if (!proxy_authorize("{realm}", "subscriber")) {{ proxy_challenge("{realm}", "1"); exit; }}
    }}
    consume_credentials();
    xlog("L_INFO", "KAM-AUTHED $rm $ru cseq=$cs user=$au\n");
    record_route();
    t_relay();
}}
"""


def make_db(path: Path, users: dict[str, str]) -> None:
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INTEGER);
            INSERT INTO version VALUES ('subscriber', 7);
            CREATE TABLE subscriber (id INTEGER PRIMARY KEY AUTOINCREMENT,
                username VARCHAR(64) NOT NULL DEFAULT '', domain VARCHAR(64) NOT NULL DEFAULT '',
                password VARCHAR(64) NOT NULL DEFAULT '', ha1 VARCHAR(128) NOT NULL DEFAULT '',
                ha1b VARCHAR(128) NOT NULL DEFAULT '');
        """)
        for user, pw in users.items():
            db.execute("INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
                       (user, REALM, pw))


class Kamailio:
    def __init__(self, workdir: Path, port: int, users: dict[str, str], *,
                 min_expires: int = 10, algorithm: str = "MD5") -> None:
        self.workdir = workdir
        self.port = port
        self.db = workdir / "kamailio.sqlite"
        self.ctl = workdir / "kamailio.ctl"
        self.cfg = workdir / "kamailio.cfg"
        self.log_path = workdir / "kamailio.log"
        self.pid_file = workdir / "kamailio.pid"
        make_db(self.db, users)
        self.cfg.write_text(CFG.format(port=port, realm=REALM, modules=MODULES, ctl=self.ctl,
                                       db=self.db, min_expires=min_expires,
                                       algorithm=algorithm))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "Kamailio":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [KAMAILIO, "-f", str(self.cfg), "-DD", "-E", "-P", str(self.pid_file),
             "-w", str(self.workdir), "-m", "32", "-M", "8"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited rc={self.proc.returncode}:\n{self.log()}")
            if self.ctl.exists() and self.rpc("core.version", check=False)[0] == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"kamailio not ready:\n{self.log()}")

    def rpc(self, *args: str, check: bool = True) -> tuple[int, str]:
        p = subprocess.run([KAMCMD, "-s", f"unix:{self.ctl}", *args], capture_output=True,
                           text=True, timeout=10)
        if check and p.returncode != 0:
            raise RuntimeError(f"kamcmd {args}: {p.stdout}{p.stderr}")
        return p.returncode, p.stdout + p.stderr

    def ul_dump(self) -> str:
        return self.rpc("ul.dump")[1]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def lines(self, marker: str) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if marker in ln]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the process group this test started
        except ProcessLookupError:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.ctl.exists():
            self.ctl.unlink()
