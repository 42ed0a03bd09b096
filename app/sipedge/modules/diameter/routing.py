"""Realm routing (RFC 6733 2.7): which connected peer gets a request.

Order of the lookup for (Destination-Realm, application):
1. `Destination-Host` naming a known peer: that peer, if it is usable and supports the
   application, else no route (the caller answers 3002; we never re-route a pinned request);
2. the configured routes of that realm (and application): the lowest metric among usable peers
   wins, equal metrics take turns;
3. usable peers that announced that realm as their Origin-Realm (if `peer_realm_routes`);
4. only when 2 and 3 found nothing: the default routes (realm `*`).
Peers in `exclude` (the sender, the Route-Record hosts, peers tried already) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...diameter.dictionary import RELAY_APPLICATION
from ...diameter.peer import Peer

DEFAULT_REALM = "*"


@dataclass(frozen=True)
class Route:
    realm: str  # "*" for a default route
    peer: str  # the peer's Diameter identity
    metric: int = 10
    applications: frozenset[int] = frozenset()  # empty: any


def supports(peer: Peer, app: int) -> bool:
    return app == 0 or app in peer.applications or RELAY_APPLICATION in peer.applications


@dataclass
class RoutingTable:
    routes: list[Route] = field(default_factory=list)
    peer_realm_routes: bool = True
    _turn: dict = field(default_factory=dict)

    def by_realm(self) -> dict[str, list[Route]]:
        out: dict[str, list[Route]] = {}
        for r in self.routes:
            out.setdefault(r.realm.lower(), []).append(r)
        return out

    def _pick(self, key: tuple, group: list[Peer]) -> Peer:
        n = self._turn.get(key, 0)
        self._turn[key] = n + 1
        if len(self._turn) > 4096:
            self._turn.clear()
        return group[n % len(group)]

    def select(self, realm: str, app: int, peers: dict[str, Peer], exclude: set[str],
               dest_host: str | None = None) -> tuple[Peer | None, str]:
        """(peer, how) where how names the rule that matched ("host", "realm", "peer-realm",
        "default") or why nothing did ("host-down", "no-route")."""
        if dest_host:
            p = peers.get(dest_host.lower())
            if p is not None:
                if p.usable and supports(p, app) and p.name.lower() not in exclude:
                    return p, "host"
                return None, "host-down"
        realm_l = (realm or "").lower()
        for how, cands in (("realm", self._configured(realm_l, app, peers, exclude)),
                           ("peer-realm", self._peer_realm(realm_l, app, peers, exclude)),
                           ("default", self._configured(DEFAULT_REALM, app, peers, exclude))):
            if cands:
                best = min(m for m, _ in cands)
                group = [p for m, p in cands if m == best]
                return self._pick((realm_l, app, how), group), how
        return None, "no-route"

    def _configured(self, realm: str, app: int, peers: dict[str, Peer],
                    exclude: set[str]) -> list[tuple[int, Peer]]:
        out = []
        for r in self.routes:
            if r.realm.lower() != realm or (r.applications and app not in r.applications):
                continue
            p = peers.get(r.peer.lower())
            if p is not None and p.usable and supports(p, app) and p.name.lower() not in exclude:
                out.append((r.metric, p))
        return out

    def _peer_realm(self, realm: str, app: int, peers: dict[str, Peer],
                    exclude: set[str]) -> list[tuple[int, Peer]]:
        if not self.peer_realm_routes or not realm:
            return []
        return [(0, p) for p in peers.values()
                if p.usable and p.caps is not None and p.caps.origin_realm.lower() == realm
                and supports(p, app) and p.name.lower() not in exclude]

    def snapshot(self, peers: dict[str, Peer]) -> list[dict]:
        rows = []
        for r in self.routes:
            p = peers.get(r.peer.lower())
            rows.append({"realm": r.realm, "peer": r.peer, "metric": r.metric,
                         "applications": sorted(r.applications),
                         "peer_state": p.state.value if p else "unknown",
                         "usable": bool(p and p.usable)})
        if self.peer_realm_routes:
            for p in peers.values():
                if p.caps is not None and p.caps.origin_realm:
                    rows.append({"realm": p.caps.origin_realm, "peer": p.name, "metric": 0,
                                 "applications": sorted(p.applications),
                                 "peer_state": p.state.value, "usable": p.usable,
                                 "implicit": True})
        return rows
