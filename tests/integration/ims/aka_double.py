"""Test double of AKA vector generation (the HSS/AuC and the USIM): CK and IK follow from
the nonce (RAND||AUTN in real AKA). Only this part of the IMS core is simulated."""

import hashlib


def keys_for(nonce: str) -> tuple[str, str]:
    h = hashlib.sha256(b"usim-double:" + nonce.encode()).digest()
    return h[:16].hex(), h[16:].hex()
