"""What travels on the bus, as bytes (pure; no sockets).

Telemetry: ``T1`` + the gateway's receive time (u64, microseconds since the epoch) + the
``Heartbeat`` exactly as the worker sent it (protobuf): the master and other gateways
parse it with the same generated code as a heartbeat that came over gRPC.

A forwarded call: ``C1`` + the peer's description (u16 length) + the caller's client
certificate, PEM (u32 length; empty in plaintext mode) + the request's protobuf bytes.
The master runs its own handler on it with that certificate, so the identity rules are
the master's, unchanged; the gateway has already checked, in the TLS handshake, that the
caller holds the certificate's key.

A reply: ``R1`` + the gRPC status code (u8, 0 = OK) + details (u16 length) + the
response's protobuf bytes.

Session events: ``S1`` + a JSON object: ``{"forget": "<worker>"}`` (a gateway must ask
again before accepting that worker's heartbeats), ``{"reset": "<boot id>"}`` (the
master started: forget every session), ``{"removed": "<worker>", "forget": "<worker>"}``
(the worker was unregistered: gateways drop it from their WebSockets; the ``forget`` key
makes a gateway that does not know ``removed`` forget its session all the same) or
``{"tokens": "<token id>"}`` (an API token was made or revoked: gateways fetch them
again).

API tokens (the answer to ``ApiTokens``, in a reply's payload): ``A1`` + a JSON list of
``{"token_id", "secret_hash", "scope", "expires_at", "revoked_at"}`` (times: ISO 8601
with their offset, or null): what a gateway needs to check a token itself. Never a
secret (``secret_hash`` is its SHA-256) and never a join token.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from cloudai.security.tokens import ApiCredential, Scope, check_token_id

_TELEMETRY = b"T1"
_CALL = b"C1"
_REPLY = b"R1"
_SESSION = b"S1"
_API_TOKENS = b"A1"
_TIME = struct.Struct("!Q")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class BusDecodeError(ValueError):
    """Bytes on the bus that are not what their subject carries."""


def encode_telemetry(heartbeat: bytes, received_at: float) -> bytes:
    return _TELEMETRY + _TIME.pack(int(received_at * 1_000_000)) + heartbeat


def decode_telemetry(data: bytes) -> tuple[float, bytes]:
    """(receive time in seconds since the epoch, the Heartbeat's bytes)."""
    if len(data) < 10 or data[:2] != _TELEMETRY:
        raise BusDecodeError("not a telemetry message")
    (micros,) = _TIME.unpack_from(data, 2)
    return micros / 1_000_000, data[10:]


@dataclass(frozen=True, slots=True)
class ForwardedCall:
    peer: str  # who called the gateway, for log lines ("gateway g1 for ipv4:...")
    certificate: bytes  # the caller's client certificate (PEM); b"": plaintext mode
    payload: bytes  # the request, protobuf


def encode_call(call: ForwardedCall) -> bytes:
    peer = call.peer.encode()[:65535]
    return b"".join(
        (
            _CALL,
            _U16.pack(len(peer)),
            peer,
            _U32.pack(len(call.certificate)),
            call.certificate,
            call.payload,
        )
    )


def decode_call(data: bytes) -> ForwardedCall:
    try:
        if data[:2] != _CALL:
            raise BusDecodeError("not a forwarded call")
        (peer_len,) = _U16.unpack_from(data, 2)
        at = 4 + peer_len
        peer = data[4:at].decode()
        (cert_len,) = _U32.unpack_from(data, at)
        at += 4
        if at + cert_len > len(data):
            raise BusDecodeError("truncated forwarded call")
        return ForwardedCall(peer, data[at : at + cert_len], data[at + cert_len :])
    except (struct.error, UnicodeDecodeError) as exc:
        raise BusDecodeError(f"bad forwarded call: {exc}") from None


@dataclass(frozen=True, slots=True)
class CallReply:
    code: int  # grpc.StatusCode's number; 0: OK
    details: str
    payload: bytes  # the response, protobuf (empty unless OK)

    @property
    def ok(self) -> bool:
        return self.code == 0


def encode_reply(reply: CallReply) -> bytes:
    details = reply.details.encode()[:65535]
    return _REPLY + bytes((reply.code,)) + _U16.pack(len(details)) + details + reply.payload


def decode_reply(data: bytes) -> CallReply:
    try:
        if data[:2] != _REPLY:
            raise BusDecodeError("not a call reply")
        code = data[2]
        (details_len,) = _U16.unpack_from(data, 3)
        at = 5 + details_len
        if at > len(data):
            raise BusDecodeError("truncated call reply")
        return CallReply(code, data[5:at].decode(), data[at:])
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise BusDecodeError(f"bad call reply: {exc}") from None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    forget: str | None = None  # this worker's session must be checked again
    reset: str | None = None  # the master (this boot id) started: forget every session
    removed: str | None = None  # this worker was unregistered (its session is gone too)
    tokens: str | None = None  # this API token was made or revoked: fetch them again


def encode_session_event(event: SessionEvent) -> bytes:
    body: dict[str, str | None]
    if event.removed is not None:
        body = {"removed": event.removed, "forget": event.removed}
    elif event.forget is not None:
        body = {"forget": event.forget}
    elif event.tokens is not None:
        body = {"tokens": event.tokens}
    else:
        body = {"reset": event.reset}
    return _SESSION + orjson.dumps(body)


def _json_after(tag: bytes, data: bytes, what: str) -> Any:
    """The JSON after ``tag``; BusDecodeError naming ``what`` when it is not there."""
    if data[:2] != tag:
        raise BusDecodeError(f"not a {what}")
    try:
        return orjson.loads(data[2:])
    except orjson.JSONDecodeError as exc:
        raise BusDecodeError(f"bad {what}: {exc}") from None


def decode_session_event(data: bytes) -> SessionEvent:
    body = _json_after(_SESSION, data, "session event")
    if not isinstance(body, dict):
        raise BusDecodeError("bad session event: not an object")
    removed, forget, reset = body.get("removed"), body.get("forget"), body.get("reset")
    tokens = body.get("tokens")
    if isinstance(removed, str):
        return SessionEvent(removed=removed)
    if isinstance(forget, str):
        return SessionEvent(forget=forget)
    if isinstance(reset, str):
        return SessionEvent(reset=reset)
    if isinstance(tokens, str):
        return SessionEvent(tokens=tokens)
    raise BusDecodeError("bad session event: neither forget, reset, removed nor tokens")


@dataclass(frozen=True, slots=True)
class ApiTokenEntry:
    """An API token as a gateway checks it (``security.tokens.ApiCredential``)."""

    token_id: str
    secret_hash: str  # SHA-256 of the secret, lower-case hex
    scope: Scope
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


def encode_api_tokens(records: Iterable[ApiCredential]) -> bytes:
    """``records`` (``ApiTokenEntry`` or the master's ``ApiTokenRecord``) as ``A1`` + JSON:
    the id, the secret's hash, the scope and the two times; nothing else."""
    return _API_TOKENS + orjson.dumps(
        [
            {
                "token_id": r.token_id,
                "secret_hash": r.secret_hash,
                "scope": r.scope.value,
                "expires_at": _time_text(r.expires_at),
                "revoked_at": _time_text(r.revoked_at),
            }
            for r in records
        ]
    )


def decode_api_tokens(data: bytes) -> list[ApiTokenEntry]:
    body = _json_after(_API_TOKENS, data, "list of API tokens")
    if not isinstance(body, list):
        raise BusDecodeError("bad list of API tokens: not a list")
    return [_api_token(item) for item in body]


def _api_token(item: object) -> ApiTokenEntry:
    if not isinstance(item, dict):
        raise BusDecodeError("bad API token: not an object")
    token_id, secret_hash, scope = item.get("token_id"), item.get("secret_hash"), item.get("scope")
    if not (isinstance(token_id, str) and isinstance(secret_hash, str) and isinstance(scope, str)):
        raise BusDecodeError("bad API token: token_id, secret_hash and scope must be strings")
    try:
        check_token_id(token_id)
        if len(secret_hash) != 64 or secret_hash.strip("0123456789abcdef"):
            raise ValueError("secret_hash must be a SHA-256 in lower-case hex")
        return ApiTokenEntry(
            token_id,
            secret_hash,
            Scope(scope),
            _time(item.get("expires_at")),
            _time(item.get("revoked_at")),
        )
    except ValueError as exc:  # TokenFormatError too
        raise BusDecodeError(f"bad API token: {exc}") from None


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("a time must be ISO 8601 text or null")
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"time {text[:40]!r} has no UTC offset")
    return moment
