"""ESP keys from the AKA CK/IK, TS 33.203 Annex I (Rel-7 and later):

- hmac-md5-96:    IK_ESP = IK (128 bit)
- hmac-sha-1-96:  IK_ESP = IK || 32 zero bits (160 bit)
- aes-cbc:        CK_ESP = CK (128 bit)
- des-ede3-cbc:   CK_ESP = CK1 || CK2 || CK1 with CK = CK1 || CK2 (192 bit)
- null:           no key
"""

from __future__ import annotations


def integrity_key(alg: str, ik: bytes) -> bytes:
    if len(ik) != 16:
        raise ValueError("IK must be 128 bits")
    if alg == "hmac-md5-96":
        return bytes(ik)
    if alg == "hmac-sha-1-96":
        return bytes(ik) + bytes(4)
    raise ValueError(f"unknown integrity algorithm {alg!r}")


def encryption_key(ealg: str, ck: bytes) -> bytes:
    if len(ck) != 16:
        raise ValueError("CK must be 128 bits")
    if ealg == "aes-cbc":
        return bytes(ck)
    if ealg == "des-ede3-cbc":
        return bytes(ck) + bytes(ck[:8])
    if ealg == "null":
        return b""
    raise ValueError(f"unknown encryption algorithm {ealg!r}")
