"""Message encoding on the bus: heartbeats as the worker sent them, forwarded calls with
the caller's certificate, replies with gRPC status codes, session events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from cloudai.bus.codec import (
    ApiTokenEntry,
    BusDecodeError,
    CallReply,
    ForwardedCall,
    SessionEvent,
    decode_api_tokens,
    decode_call,
    decode_reply,
    decode_session_event,
    decode_telemetry,
    encode_api_tokens,
    encode_call,
    encode_reply,
    encode_session_event,
    encode_telemetry,
)
from cloudai.proto import pb
from cloudai.security.tokens import ApiTokenRecord, Scope, hash_secret


def test_telemetry_carries_the_heartbeat_bytes_and_the_receive_time() -> None:
    heartbeat = pb.Heartbeat(worker_id="w1", cpu_usage=12.5, memory_usage=40.0)
    data = encode_telemetry(heartbeat.SerializeToString(), 1_800_000_000.123456)
    received_at, raw = decode_telemetry(data)
    assert received_at == pytest.approx(1_800_000_000.123456, abs=1e-6)
    assert pb.Heartbeat.FromString(raw) == heartbeat
    assert len(data) == len(raw) + 10  # 10 bytes of envelope


@pytest.mark.parametrize("data", [b"", b"T1", b"X1" + bytes(20), b"C1" + bytes(20)])
def test_what_is_not_telemetry_is_refused(data: bytes) -> None:
    with pytest.raises(BusDecodeError):
        decode_telemetry(data)


@pytest.mark.parametrize("cert", [b"", b"-----BEGIN CERTIFICATE-----\nMIIB\n"])
def test_forwarded_calls_round_trip(cert: bytes) -> None:
    call = ForwardedCall("gateway g1 for ipv4:10.0.0.5:4711", cert, b"\x0a\x02w1")
    assert decode_call(encode_call(call)) == call


@pytest.mark.parametrize(
    "data", [b"", b"C1", b"C1\x00\x05ab", b"C1\x00\x00\xff\xff\xff\xff", b"R1\x00\x00\x00"]
)
def test_broken_calls_are_refused_in_one_error(data: bytes) -> None:
    with pytest.raises(BusDecodeError):
        decode_call(data)


def test_replies_round_trip() -> None:
    ok = CallReply(0, "", pb.RegisterAck(success=True, message="hi").SerializeToString())
    assert decode_reply(encode_reply(ok)) == ok and ok.ok
    refused = CallReply(5, "worker 'w1' is not registered", b"")
    assert decode_reply(encode_reply(refused)) == refused and not refused.ok
    for bad in (b"", b"R1", b"R1\x00\x00\x09abc", b"C1\x00\x00\x00"):
        with pytest.raises(BusDecodeError):
            decode_reply(bad)


def test_session_events_round_trip() -> None:
    events = (
        SessionEvent(forget="w.1"),
        SessionEvent(reset="abc123"),
        SessionEvent(removed="w.1"),
        SessionEvent(tokens="0123456789ab"),
    )
    for event in events:
        assert decode_session_event(encode_session_event(event)) == event
    bad_events = (
        b"S1[]",
        b"S1{}",
        b"S1{",
        b"XX{}",
        b'S1{"forget": 3}',
        b'S1{"removed": null}',
        b'S1{"tokens": ["a"]}',
        b"S1\xff",
    )
    for bad in bad_events:
        with pytest.raises(BusDecodeError):
            decode_session_event(bad)


def test_forget_and_reset_keep_their_bytes() -> None:
    assert encode_session_event(SessionEvent(forget="w1")) == b'S1{"forget":"w1"}'
    assert encode_session_event(SessionEvent(reset="b1")) == b'S1{"reset":"b1"}'


def test_a_removal_is_a_forget_for_a_gateway_that_knows_only_forget() -> None:
    body = orjson.loads(encode_session_event(SessionEvent(removed="w1"))[2:])
    assert body == {"removed": "w1", "forget": "w1"}


HASH = hash_secret("s" * 43)
T = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)


def test_api_tokens_round_trip_without_a_secret_or_a_name() -> None:
    entries = [
        ApiTokenEntry("0123456789ab", HASH, Scope.READ),
        ApiTokenEntry("ba9876543210", HASH, Scope.ADMIN, expires_at=T, revoked_at=T),
        ApiTokenEntry("aaaaaaaaaaaa", HASH, Scope.READ, T.astimezone(timezone(timedelta(hours=2)))),
    ]
    assert decode_api_tokens(encode_api_tokens(entries)) == entries
    assert decode_api_tokens(encode_api_tokens([])) == []
    # The master's records encode to what a gateway needs, and nothing else.
    record = ApiTokenRecord("0123456789ab", HASH, Scope.ADMIN, T, name="grafana", expires_at=T)
    data = encode_api_tokens([record])
    assert b"grafana" not in data and b"created_at" not in data
    assert decode_api_tokens(data) == [
        ApiTokenEntry("0123456789ab", HASH, Scope.ADMIN, expires_at=T)
    ]


def _tokens(*items: object) -> bytes:
    return b"A1" + orjson.dumps(list(items))


GOOD = {"token_id": "0123456789ab", "secret_hash": HASH, "scope": "read"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"A1",
        b"A1{",
        b"A1{}",
        b"S1[]",
        _tokens(3),
        _tokens({**GOOD, "token_id": "XYZ"}),
        _tokens({**GOOD, "token_id": None}),
        _tokens({**GOOD, "secret_hash": "00"}),
        _tokens({**GOOD, "secret_hash": HASH.upper()}),
        _tokens({**GOOD, "scope": "root"}),
        _tokens({**GOOD, "scope": 1}),
        _tokens({**GOOD, "expires_at": "yesterday"}),
        _tokens({**GOOD, "expires_at": 1_800_000_000}),
        _tokens({**GOOD, "revoked_at": "2026-12-01T10:00:00"}),  # no offset
        _tokens(GOOD, "x"),
    ],
)
def test_garbage_is_not_a_list_of_api_tokens(data: bytes) -> None:
    with pytest.raises(BusDecodeError):
        decode_api_tokens(data)
