"""Release channels, sans-IO: signed index format, version ordering, update choice, window.

A channel ("stable", "nightly") is a static folder any web server can serve:

    <base>/<channel>/index.json        the index (UTF-8 JSON, below)
    <base>/<channel>/index.json.sig    Ed25519 signature of index.json's exact bytes (base64)
    <base>/bundles/<file>.raucb        bundles; promoting an entry re-signs, never copies

index.json:

    {"format": 1, "channel": "nightly", "published": "2026-12-07T01:00:00Z",
     "releases": [{"version": "0.1.0+20261207010000", "compatible": "sipedge-qemu-x86_64",
                   "url": "../bundles/sipedge-....raucb", "size": 68157440,
                   "sha256": "<64 hex>", "min_version": "0.1.0", "notes": "..."}]}

The signature is checked over the bytes *before* they are parsed; the box holds the release
public key (`/etc/rauc/index.pub`, raw Ed25519 in PEM). A URL is relative to the index URL.
Nothing here does I/O or reads a clock: callers pass bytes, versions and the local time.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

from ..errors import EdgeError

INDEX_FORMAT = 1
CHANNELS = ("stable", "nightly")
MAX_INDEX_BYTES = 256 * 1024


class ChannelError(EdgeError):
    """An index or a version that cannot be trusted or used."""


class BadSignature(ChannelError):
    """The index signature does not verify with the release key."""


# ---------------------------------------------------------------- versions

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?")


@dataclass(frozen=True, order=False)
class Version:
    """`MAJOR.MINOR.PATCH[-pre][+build]`. Ordered like SemVer 2.0 for the first three parts
    and the pre-release (a pre-release sorts before its release), and then, unlike SemVer,
    by the build id: nightly builds of one project version are `0.1.0+20261207010000`,
    `0.1.0+20261208010000`, and the later one must win. Numeric build ids compare as
    numbers, others as text; no build id sorts first."""

    major: int
    minor: int
    patch: int
    pre: str = ""
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION.fullmatch(text)
        if m is None:
            raise ChannelError(f"bad version {text!r} (want MAJOR.MINOR.PATCH[-pre][+build])")
        return cls(int(m[1]), int(m[2]), int(m[3]), m[4] or "", m[5] or "")

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += f"-{self.pre}"
        if self.build:
            s += f"+{self.build}"
        return s

    @staticmethod
    def _ids(text: str) -> tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in text.split("."))

    def key(self) -> tuple:
        pre = (1,) if not self.pre else (0, self._ids(self.pre))
        build = () if not self.build else self._ids(self.build)
        return (self.major, self.minor, self.patch, pre, build)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: Version) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: Version) -> bool:
        return self.key() >= other.key()


# ---------------------------------------------------------------- index

@dataclass(frozen=True)
class Release:
    version: Version
    compatible: str
    url: str
    size: int
    sha256: str
    min_version: Version | None = None
    notes: str = ""

    def to_json(self) -> dict:
        d = {"version": str(self.version), "compatible": self.compatible, "url": self.url,
             "size": self.size, "sha256": self.sha256}
        if self.min_version is not None:
            d["min_version"] = str(self.min_version)
        if self.notes:
            d["notes"] = self.notes
        return d


@dataclass(frozen=True)
class Index:
    channel: str
    published: str
    releases: tuple[Release, ...] = field(default_factory=tuple)

    def to_bytes(self) -> bytes:
        doc = {"format": INDEX_FORMAT, "channel": self.channel, "published": self.published,
               "releases": [r.to_json() for r in self.releases]}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _field(d: dict, key: str, typ: type, where: str, required: bool = True):
    if key not in d:
        if required:
            raise ChannelError(f"{where}: missing {key!r}")
        return None
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise ChannelError(f"{where}.{key}: want {typ.__name__}, got {type(v).__name__}")
    return v


def parse_index(data: bytes) -> Index:
    """Parse index bytes (already verified). Every field is checked; unknown keys are
    errors (a newer format must bump `format`)."""
    if len(data) > MAX_INDEX_BYTES:
        raise ChannelError(f"index larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelError(f"index is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ChannelError("index: not an object")
    fmt = _field(doc, "format", int, "index")
    if fmt != INDEX_FORMAT:
        raise ChannelError(f"index.format: {fmt} is not supported (want {INDEX_FORMAT})")
    extra = set(doc) - {"format", "channel", "published", "releases"}
    if extra:
        raise ChannelError(f"index: unknown key(s) {sorted(extra)}")
    channel = _field(doc, "channel", str, "index")
    published = _field(doc, "published", str, "index")
    rels = _field(doc, "releases", list, "index")
    out = []
    for i, r in enumerate(rels):
        where = f"index.releases[{i}]"
        if not isinstance(r, dict):
            raise ChannelError(f"{where}: not an object")
        extra = set(r) - {"version", "compatible", "url", "size", "sha256", "min_version",
                          "notes"}
        if extra:
            raise ChannelError(f"{where}: unknown key(s) {sorted(extra)}")
        sha = _field(r, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ChannelError(f"{where}.sha256: not 64 lower-case hex digits")
        size = _field(r, "size", int, where)
        if size <= 0:
            raise ChannelError(f"{where}.size: must be positive")
        minv = _field(r, "min_version", str, where, required=False)
        out.append(Release(
            version=Version.parse(_field(r, "version", str, where)),
            compatible=_field(r, "compatible", str, where),
            url=_field(r, "url", str, where), size=size, sha256=sha,
            min_version=Version.parse(minv) if minv else None,
            notes=_field(r, "notes", str, where, required=False) or ""))
    return Index(channel, published, tuple(out))


def load_public_key(pem: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ChannelError("the index key is not an Ed25519 public key")
    return key


def sign_index(data: bytes, private_key) -> bytes:
    """Signature file contents for index bytes (tools/release)."""
    return base64.b64encode(private_key.sign(data)) + b"\n"


def verify_index(data: bytes, sig_file: bytes, public_key, channel: str) -> Index:
    """Verify, then parse. Raises BadSignature or ChannelError; nothing of an index that
    fails here is used. The channel inside must be the one asked for, so a correctly signed
    nightly index served as stable is refused too."""
    from cryptography.exceptions import InvalidSignature
    if len(data) > MAX_INDEX_BYTES:
        raise ChannelError(f"index larger than {MAX_INDEX_BYTES} bytes")
    try:
        sig = base64.b64decode(sig_file.strip(), validate=True)
    except ValueError:
        raise BadSignature("index signature is not base64") from None
    try:
        public_key.verify(sig, data)
    except InvalidSignature:
        raise BadSignature("index signature does not verify with the release key") from None
    idx = parse_index(data)
    if idx.channel != channel:
        raise ChannelError(f"index is for channel {idx.channel!r}, not {channel!r}")
    return idx


# ---------------------------------------------------------------- decision

@dataclass(frozen=True)
class Choice:
    """Result of `choose()`: `release` to install, or None with `reason`."""

    release: Release | None
    reason: str
    url: str = ""


def choose(index: Index, index_url: str, current: Version, compatible: str, *,
           force: bool = False, version: Version | None = None) -> Choice:
    """The release to install: the newest for `compatible` (or exactly `version`). A
    release not newer than `current` is refused unless `force` (a downgrade or reinstall
    from the console); one whose `min_version` is above `current` is refused (install the
    intermediate release first)."""
    cands = [r for r in index.releases if r.compatible == compatible]
    if not cands:
        return Choice(None, f"no release for {compatible} in channel {index.channel}")
    if version is not None:
        cands = [r for r in cands if r.version.key() == version.key()]
        if not cands:
            return Choice(None, f"version {version} not in channel {index.channel}")
    best = max(cands, key=lambda r: r.version.key())
    if best.version <= current and not force:
        what = "already installed" if best.version.key() == current.key() else "a downgrade"
        return Choice(None, f"{best.version} is {what} (running {current}); "
                            "refused unless forced")
    if best.min_version is not None and current < best.min_version and not force:
        return Choice(None, f"{best.version} needs at least {best.min_version} "
                            f"(running {current})")
    return Choice(best, f"{current} -> {best.version}", urljoin(index_url, best.url))


# ---------------------------------------------------------------- window

_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)")


def parse_window(text: str) -> tuple[int, int] | None:
    """"02:00-04:00" -> (120, 240) in minutes of the day; "" -> None (any time). A window
    may cross midnight ("23:30-01:00")."""
    text = text.strip()
    if not text:
        return None
    m = _WINDOW.fullmatch(text)
    if m is None:
        raise ChannelError(f"bad window {text!r} (want HH:MM-HH:MM)")
    a = int(m[1]) * 60 + int(m[2])
    b = int(m[3]) * 60 + int(m[4])
    if b > 1440 or a == b:
        raise ChannelError(f"bad window {text!r}")
    return a, b


def in_window(window: tuple[int, int] | None, minute_of_day: int) -> bool:
    if window is None:
        return True
    a, b = window
    m = minute_of_day % 1440
    return a <= m < b if a < b else (m >= a or m < b)


def minutes_until_window(window: tuple[int, int] | None, minute_of_day: int) -> int:
    """0 inside the window, else minutes until it opens."""
    if in_window(window, minute_of_day):
        return 0
    assert window is not None
    return (window[0] - minute_of_day) % 1440
