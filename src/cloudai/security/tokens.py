"""Join tokens and API tokens: their text, their records and the checks on them.

Pure: no I/O, no clock (the caller passes ``now``), so the master, the CLI and the API
models can all use it.

- A join token lets one worker (or several) join the cluster once (or N times):
  ``cloudai-join.1.<ca_fingerprint>.<join_port>.<token_id>.<secret>``. It carries what
  the worker needs to reach the master safely: the SHA-256 fingerprint of the cluster
  CA (64 lower-case hex digits) to pin the TLS connection to, and the master's HTTPS
  port, where the join request is served.
- An API token authenticates a person or a program on the HTTP API:
  ``cloudai.<token_id>.<secret>``.

``token_id`` is 12 lower-case hex digits, public (lists, logs, revocation); ``secret`` is
URL-safe base64 and never stored: the store keeps its SHA-256 (hex), compared in
constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

JOIN_PREFIX: Final = "cloudai-join"
JOIN_VERSION: Final = "1"
API_PREFIX: Final = "cloudai"

TOKEN_ID_LENGTH: Final = 12
_TOKEN_ID_RE: Final = re.compile(r"[0-9a-f]{12}")
_SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
_FINGERPRINT_RE: Final = re.compile(r"[0-9a-f]{64}")
_PORT_RE: Final = re.compile(r"[1-9][0-9]{0,4}")
_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")

MAX_TOKEN_LENGTH: Final = 400
"""Longer text is refused before it is looked at (a join token is about 140 characters)."""


class TokenFormatError(ValueError):
    """Text that is not a token of the expected kind; the message says what is wrong."""


class Scope(enum.StrEnum):
    """What an API token may do: ``read`` (GETs and streams) or ``admin`` (everything)."""

    READ = "read"
    ADMIN = "admin"

    def allows(self, required: Scope) -> bool:
        """True if a token of this scope may do what needs ``required``."""
        return self is Scope.ADMIN or required is Scope.READ


# -- text ------------------------------------------------------------------------------


def new_token_id() -> str:
    """A fresh public token id: 12 lower-case hex digits."""
    return secrets.token_hex(TOKEN_ID_LENGTH // 2)


def new_secret() -> str:
    """A fresh secret: 32 random bytes, URL-safe base64 (43 characters, no dots)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class JoinToken:
    """A parsed join token."""

    ca_fingerprint: str
    join_port: int
    token_id: str
    secret: str = ""

    def __str__(self) -> str:
        return format_join_token(self.ca_fingerprint, self.join_port, self.token_id, self.secret)

    def __repr__(self) -> str:  # never show the secret
        return (
            f"JoinToken(ca_fingerprint={self.ca_fingerprint!r}, join_port={self.join_port}, "
            f"token_id={self.token_id!r}, secret='***')"
        )


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A parsed API token."""

    token_id: str
    secret: str = ""

    def __str__(self) -> str:
        return format_api_token(self.token_id, self.secret)

    def __repr__(self) -> str:  # never show the secret
        return f"ApiToken(token_id={self.token_id!r}, secret='***')"


def format_join_token(ca_fingerprint: str, join_port: int, token_id: str, secret: str) -> str:
    """The text of a join token; the parts are checked as ``parse_join_token`` would."""
    text = f"{JOIN_PREFIX}.{JOIN_VERSION}.{ca_fingerprint}.{join_port}.{token_id}.{secret}"
    parse_join_token(text)
    return text


def format_api_token(token_id: str, secret: str) -> str:
    """The text of an API token; the parts are checked as ``parse_api_token`` would."""
    text = f"{API_PREFIX}.{token_id}.{secret}"
    parse_api_token(text)
    return text


def parse_join_token(text: str) -> JoinToken:
    """The parts of a join token; ``TokenFormatError`` says what is wrong with ``text``."""
    text = text.strip()
    if len(text) > MAX_TOKEN_LENGTH:
        raise TokenFormatError(f"a join token is at most {MAX_TOKEN_LENGTH} characters")
    parts = text.split(".")
    if parts[0] != JOIN_PREFIX:
        hint = " (that is an API token)" if parts[0] == API_PREFIX else ""
        raise TokenFormatError(f"not a join token: it must start with '{JOIN_PREFIX}.'{hint}")
    if len(parts) < 2 or parts[1] != JOIN_VERSION:
        version = parts[1][:10] if len(parts) > 1 else ""
        raise TokenFormatError(
            f"join token version {version!r} is not supported (expected {JOIN_VERSION!r})"
        )
    if len(parts) != 6:
        raise TokenFormatError(
            f"a join token has 6 dot-separated parts "
            f"({JOIN_PREFIX}.{JOIN_VERSION}.CA.PORT.ID.SECRET), this one has {len(parts)}"
        )
    _, _, fingerprint, port, token_id, secret = parts
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        raise TokenFormatError("the join token's CA fingerprint must be 64 lower-case hex digits")
    if not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise TokenFormatError(f"the join token's port {port[:10]!r} is not a port (1-65535)")
    _check_id_and_secret("join token", token_id, secret)
    return JoinToken(fingerprint, int(port), token_id, secret)


def parse_api_token(text: str) -> ApiToken:
    """The parts of an API token; ``TokenFormatError`` says what is wrong with ``text``."""
    text = text.strip()
    if len(text) > MAX_TOKEN_LENGTH:
        raise TokenFormatError(f"an API token is at most {MAX_TOKEN_LENGTH} characters")
    parts = text.split(".")
    if parts[0] != API_PREFIX:
        hint = " (that is a join token)" if parts[0] == JOIN_PREFIX else ""
        raise TokenFormatError(f"not an API token: it must start with '{API_PREFIX}.'{hint}")
    if len(parts) != 3:
        raise TokenFormatError(
            f"an API token has 3 dot-separated parts ({API_PREFIX}.ID.SECRET), "
            f"this one has {len(parts)}"
        )
    _, token_id, secret = parts
    _check_id_and_secret("API token", token_id, secret)
    return ApiToken(token_id, secret)


def _check_id_and_secret(kind: str, token_id: str, secret: str) -> None:
    if not _TOKEN_ID_RE.fullmatch(token_id):
        raise TokenFormatError(f"the {kind}'s id must be {TOKEN_ID_LENGTH} lower-case hex digits")
    if not _SECRET_RE.fullmatch(secret):
        raise TokenFormatError(
            f"the {kind}'s secret must be 16 to 128 characters of A-Z a-z 0-9 _ -"
        )


def check_token_id(token_id: str) -> str:
    """``token_id`` if it has the form of a token id, else ``TokenFormatError``."""
    if not _TOKEN_ID_RE.fullmatch(token_id):
        raise TokenFormatError(
            f"token id {token_id[:40]!r} is not {TOKEN_ID_LENGTH} lower-case hex digits"
        )
    return token_id


# -- secrets ---------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    """What the store keeps of a secret: SHA-256, lower-case hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    """True if ``secret`` hashes to ``secret_hash``; the comparison takes constant time."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def _check_hash(secret_hash: str) -> None:
    if not _HASH_RE.fullmatch(secret_hash):
        raise ValueError("secret_hash must be a SHA-256 in lower-case hex (64 digits)")


# -- records ---------------------------------------------------------------------------

JoinState = Literal["active", "expired", "revoked", "used up"]
ApiState = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class JoinTokenRecord:
    """A join token as the master keeps it (only the hash of its secret).

    ``max_uses`` None: any number of joins; ``expires_at`` None: no expiry; ``worker_id``
    None: any worker id may join with it.
    """

    token_id: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    max_uses: int | None = None
    uses: int = 0
    worker_id: str | None = None
    description: str = ""
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        check_token_id(self.token_id)
        _check_hash(self.secret_hash)
        if self.max_uses is not None and self.max_uses < 1:
            raise ValueError(f"max_uses must be at least 1 (or None), got {self.max_uses}")
        if self.uses < 0:
            raise ValueError(f"uses must not be negative, got {self.uses}")

    def state(self, now: datetime) -> JoinState:
        """What the token is at ``now``: the first that applies of revoked, expired,
        used up, active."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used up"
        return "active"


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """An API token as the master keeps it (only the hash of its secret)."""

    token_id: str
    secret_hash: str
    scope: Scope
    created_at: datetime
    name: str = ""
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        check_token_id(self.token_id)
        _check_hash(self.secret_hash)
        if not isinstance(self.scope, Scope):
            object.__setattr__(self, "scope", Scope(self.scope))

    def state(self, now: datetime) -> ApiState:
        return api_state(self, now)


class ApiCredential(Protocol):
    """What checking an API token needs of its record: the master's ``ApiTokenRecord``
    and a gateway's copy of it (``bus.codec.ApiTokenEntry``, without name or dates of
    creation) both have it."""

    @property
    def token_id(self) -> str: ...
    @property
    def secret_hash(self) -> str: ...
    @property
    def scope(self) -> Scope: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def api_state(record: ApiCredential, now: datetime) -> ApiState:
    """What an API token is at ``now``: revoked, expired or active (in that order)."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


# -- checks ----------------------------------------------------------------------------

JoinRefusal = Literal["unknown", "expired", "revoked", "used_up", "wrong_worker"]


class JoinRefused(Exception):
    """A join token that does not admit this worker now: ``reason`` says which way (for
    programs), ``message`` in words (for people)."""

    def __init__(self, reason: JoinRefusal, message: str) -> None:
        super().__init__(message)
        self.reason: JoinRefusal = reason
        self.message = message


def format_time(moment: datetime) -> str:
    """``2026-12-01 10:00:00 UTC``: how the messages show a time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def unknown_join_token(token_id: str) -> JoinRefused:
    """The refusal for a token id this master does not know, or a wrong secret (the two
    are not told apart)."""
    return JoinRefused("unknown", f"join token {token_id} is not known to this master")


def check_join(record: JoinTokenRecord | None, worker_id: str, now: datetime) -> None:
    """Raise ``JoinRefused`` unless ``record`` admits ``worker_id`` at ``now``.

    The refusals, in this order: unknown (``record`` None; ``unknown_join_token(id)``
    says the same naming the id), revoked, expired, used up, bound to another worker.
    The secret is the caller's to check first (``secret_matches``).
    """
    if record is None:
        raise JoinRefused("unknown", "the join token is not known to this master")
    name = f"join token {record.token_id}"
    if record.revoked_at is not None:
        raise JoinRefused("revoked", f"{name} was revoked at {format_time(record.revoked_at)}")
    if record.expires_at is not None and record.expires_at <= now:
        raise JoinRefused("expired", f"{name} expired at {format_time(record.expires_at)}")
    if record.max_uses is not None and record.uses >= record.max_uses:
        raise JoinRefused(
            "used_up", f"{name} has been used {record.uses} of {record.max_uses} times"
        )
    if record.worker_id is not None and record.worker_id != worker_id:
        raise JoinRefused(
            "wrong_worker", f"{name} is for worker {record.worker_id!r}, not {worker_id!r}"
        )


def check_api(record: ApiCredential | None, now: datetime) -> bool:
    """True if ``record`` is an API token that may be used at ``now``."""
    return record is not None and api_state(record, now) == "active"


def authenticate_api_token(
    text: str, lookup: Callable[[str], ApiCredential | None], now: datetime
) -> Scope | None:
    """The scope of the API token ``text`` at ``now``; None if it is malformed, unknown
    (``lookup(token_id)`` is None), has a wrong secret (compared in constant time), is
    expired or revoked. The master's check and a gateway's, on their own records."""
    try:
        token = parse_api_token(text)
    except TokenFormatError:
        return None
    record = lookup(token.token_id)
    if record is None or not secret_matches(token.secret, record.secret_hash):
        return None
    return record.scope if check_api(record, now) else None
