"""S-CSCF/registrar for the kernel tests, as a sipedge routing script: challenges every
REGISTER without a response with an AKA 401 carrying ck/ik for the P-CSCF (vector generation
is a test double, aka_double.py), accepts the answered one with the Contact and expiry asked
for, and answers MESSAGE with 200. A From user `noik` gets a challenge without ik."""

import secrets
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from aka_double import keys_for


def _expires(msg):
    contact = msg.get_hf("Contact") or ""
    for p in contact.split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "expires":
            return contact.split(";")[0], int(v)
    return contact.split(";")[0], int(msg.get_hf("Expires") or 3600)


def request_route(msg):
    if msg.method == "REGISTER":
        auth = msg.get_hf("Authorization") or ""
        if 'response=""' in auth or "response" not in auth:
            nonce = secrets.token_hex(16)
            ck, ik = keys_for(nonce)
            keys = f', ck="{ck}"' + ("" if msg.from_user == "noik" else f', ik="{ik}"')
            return msg.reply(401, "Unauthorized", [(
                "WWW-Authenticate", f'Digest realm="ims.test", nonce="{nonce}", '
                f'algorithm=AKAv1-MD5, qop="auth"{keys}')])
        contact, expires = _expires(msg)
        if expires == 0:
            return msg.reply(200, "OK")
        return msg.reply(200, "OK", [("Contact", f"{contact};expires={expires}")])
    if msg.method == "MESSAGE":
        return msg.reply(200, "OK")
    return msg.reply(405, "Method Not Allowed")
