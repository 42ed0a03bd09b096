"""The console's `update` commands (hooked into console.ConsoleSession: `run` and `tick`).

    update status                 booted slot, both slots' versions, marked good, last
                                  install, rollback, channel and last check
    update check                  fetch and verify the channel index now
    update install FILE|URL|usb [--force]
                                  check and install a bundle (`usb`: the one offered on a
                                  USB stick / SD card); progress lines follow
                                  (`--force`: allow a downgrade or reinstall)

Everything goes through the backend's RPC (`update.*` of ota.OtaManager); progress is
polled from `tick()` (the console thread calls it every 0.2 s) and printed as it comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

HELP = """\
  update status             firmware slots, versions, last install, rollback, channel
  update check              look for a newer release on the channel
  update install SRC [--force]  install a bundle file, URL or `usb` (asks first)"""


def format_status(st: dict[str, Any]) -> str:
    lines = [f"booted:   slot {st.get('booted')} version {st.get('version')}"
             f" ({'marked good' if st.get('marked_good') else 'not marked good yet'}"
             f"{', trial boot' if st.get('trial') else ''})"]
    for name, s in sorted((st.get("slots") or {}).items()):
        lines.append(f"slot {name}:   {s.get('version') or '-'} state={s.get('state')} "
                     f"boot={s.get('boot_status')} {s.get('device') or ''}")
    if st.get("rollback"):
        lines.append(f"ROLLBACK: {st['rollback']}")
    li = st.get("last_install")
    if li:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(li.get("time", 0)))
        lines.append(f"last install: {li.get('result')} {li.get('version') or ''} {when}Z"
                     + (f" error: {li['error']}" if li.get("error") else ""))
    inst = st.get("installing")
    if inst:
        lines.append(f"installing: {inst.get('percent')}% {inst.get('step')}")
    lines.append(f"channel:  {st.get('channel')} {st.get('url') or '(no url)'}")
    lc = st.get("last_check")
    if lc:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(lc.get("time", 0)))
        lines.append(f"last check: {when}Z " + (lc.get("reason", "") if lc.get("ok")
                                                 else f"error: {lc.get('error')}"))
    if st.get("media_offer"):
        o = st["media_offer"]
        lines.append(f"USB offer: {o.get('name')} on {o.get('device')} version "
                     f"{o.get('version') or '-'} ({'signed' if o.get('signed') else 'REFUSED'})")
    if st.get("rauc_error"):
        lines.append(f"rauc: {st['rauc_error']}")
    return "\n".join(lines)


class UpdateCommands:
    def __init__(self, rpc: Callable[[str, dict[str, Any]], Any],
                 confirm: Callable[[str, str, Callable[[], str]], str]) -> None:
        self.rpc = rpc
        self.confirm = confirm
        self.watching = False
        self.shown = 0
        self.next_poll = 0.0
        self.watch_check = False
        self.offer_seen: str | None = None
        self.offers = True  # poll for bundles offered on USB media
        self.next_offer_poll = 0.0

    def run(self, args: list[str]) -> str:
        if args == ["status"] or not args:
            return format_status(self.rpc("update.status", {}))
        if args == ["check"]:
            self.rpc("update.check", {})
            self.watch_check = True
            self.next_poll = 0.0
            self._check_started = self._last_check_time()
            return "checking the channel..."
        if args[0] == "install" and len(args) >= 2:
            force = "--force" in args[1:]
            srcs = [a for a in args[1:] if a != "--force"]
            if len(srcs) != 1:
                return "usage: update install FILE|URL [--force]"
            src = srcs[0]

            def go() -> str:
                self.rpc("update.install", {"source": src, "force": force})
                self.watching = True
                self.shown = 0
                self.next_poll = 0.0
                return f"installing {src}; progress follows"
            return self.confirm(f"install {src}{' (forced)' if force else ''}?", "y", go)
        return "usage: update status | update check | update install FILE|URL [--force]"

    def _last_check_time(self) -> float:
        lc = self.rpc("update.last_check", {}) or {}
        return float(lc.get("time", 0.0))

    def tick(self, now: float) -> str:
        """New progress lines, or a bundle offered on a USB stick (empty: nothing to say)."""
        if self.offers and now >= self.next_offer_poll:
            self.next_offer_poll = now + 5.0
            try:
                offer = self.rpc("update.offer", {}) or None
            except Exception:  # noqa: BLE001 - no update agent on this box: stop asking
                self.offers = False
                offer = None
            if not isinstance(offer, dict) or "file" not in offer:
                offer = None
            key = None if offer is None else f"{offer.get('device')}:{offer.get('file')}"
            if key != self.offer_seen:
                self.offer_seen = key
                if offer is not None:
                    return (f"update bundle on {offer.get('device')}: {offer.get('name')} "
                            + (f"version {offer.get('version')} for {offer.get('compatible')}"
                               if offer.get("signed") else
                               f"NOT usable: {offer.get('error')}")
                            + "\ninstall it with: update install usb")
        if not (self.watching or self.watch_check) or now < self.next_poll:
            return ""
        self.next_poll = now + 1.0
        out = []
        if self.watching:
            p = self.rpc("update.progress", {})
            lines = p.get("lines") or []
            out += lines[self.shown:]
            self.shown = len(lines)
            if p.get("done"):
                self.watching = False
                out.append("update: " + ("done, reboot to start the new version" if p.get("ok")
                                         else f"FAILED: {p.get('error')}"))
        if self.watch_check:
            lc = self.rpc("update.last_check", {}) or {}
            if float(lc.get("time", 0.0)) > self._check_started:
                self.watch_check = False
                if lc.get("ok"):
                    av = lc.get("available")
                    out.append(f"check: {lc.get('reason')}" + (
                        f"\nupdate available: {av['version']} ({av['size']} bytes) "
                        f"{av['url']}\n{av.get('notes') or ''}\n"
                        f"install it with: update install {av['url']}" if av else ""))
                else:
                    out.append(f"check failed: {lc.get('error')}")
        return "\n".join(out)
