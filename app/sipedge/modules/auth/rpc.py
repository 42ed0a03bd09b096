"""RPC methods `subscriber.add`, `subscriber.list`, `subscriber.rm` as plain functions.

`store` is anything with add_subscriber / subscribers / remove_subscriber (the registrar's
`Store`). A password given to `subscriber.add` is turned into HA1 values here and dropped;
it is never stored or logged (the RPC layer must redact the `password` parameter too)."""

from __future__ import annotations

from .digest import make_ha1


def subscriber_add(store, username: str, domain: str, password: str | None = None, *,
                   ha1_md5: str = "", ha1_sha256: str = "", realm: str | None = None) -> dict:
    """Add or replace a subscriber, from a password or from precomputed HA1 values.
    `realm` defaults to the domain (the realm our challenges use unless [auth] realm is set)."""
    realm = realm or domain
    if password is not None:
        if ha1_md5 or ha1_sha256:
            raise ValueError("give a password or HA1 values, not both")
        if not password:
            raise ValueError("empty password")
        ha1_md5 = make_ha1(username, realm, password, "MD5")
        ha1_sha256 = make_ha1(username, realm, password, "SHA-256")
    store.add_subscriber(username, domain, ha1_md5=ha1_md5, ha1_sha256=ha1_sha256)
    return {"username": username, "domain": domain.lower(),
            "algorithms": [a for a, v in (("MD5", ha1_md5), ("SHA-256", ha1_sha256)) if v]}


def subscriber_list(store, domain: str | None = None) -> list[dict]:
    return store.subscribers(domain)


def subscriber_rm(store, username: str, domain: str) -> bool:
    return store.remove_subscriber(username, domain)


RPC = {"subscriber.add": subscriber_add, "subscriber.list": subscriber_list,
       "subscriber.rm": subscriber_rm}
