"""The exception tree. One root, `EdgeError`; protocol errors split as in h11."""

from __future__ import annotations

from dataclasses import dataclass


class EdgeError(Exception):
    """Root of every error sipedge raises on purpose."""


class ProtocolError(EdgeError):
    """Abstract: something is wrong with a protocol exchange."""


class LocalProtocolError(ProtocolError):
    """We misused an API (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid. `reason` becomes the reason phrase of the reply."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint


class TransportError(EdgeError):
    """A message could not be sent."""


class ScriptError(EdgeError):
    """A routing script failed to load. `location` is `file:line`."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.reason}"


class ConfigError(EdgeError):
    """A config file is invalid. `errors` lists every problem found, not just the first."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
