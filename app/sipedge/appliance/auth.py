"""Console password hashing (PBKDF2-SHA256, stdlib only) and the lock-out rule (sans-IO)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 200_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """`pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`"""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; a malformed or empty `stored` never verifies."""
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != SCHEME or not parts[1].isdigit():
        return False
    try:
        salt, want = _unb64(parts[2]), _unb64(parts[3])
    except ValueError:
        return False
    iterations = int(parts[1])
    if not 1 <= iterations <= 10_000_000:
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, want)


def is_valid_hash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) == 4 and parts[0] == SCHEME and parts[1].isdigit()


class LoginGuard:
    """Lock-out after `max_failures` failed logins in a row, for `lockout_s` seconds."""

    def __init__(self, max_failures: int, lockout_s: float) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.failures = 0
        self.locked_until: float | None = None

    def locked(self, now: float) -> float:
        """Seconds of lock-out left (0: not locked)."""
        if self.locked_until is None:
            return 0.0
        if now >= self.locked_until:
            self.locked_until = None
            self.failures = 0
            return 0.0
        return self.locked_until - now

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.max_failures:
            self.locked_until = now + self.lockout_s
