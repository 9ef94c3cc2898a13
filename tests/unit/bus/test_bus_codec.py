"""Message encoding on the bus: heartbeats as the worker sent them, forwarded calls with
the caller's certificate, replies with gRPC status codes, session events."""

from __future__ import annotations

import pytest

from cloudai.bus.codec import (
    BusDecodeError,
    CallReply,
    ForwardedCall,
    SessionEvent,
    decode_call,
    decode_reply,
    decode_session_event,
    decode_telemetry,
    encode_call,
    encode_reply,
    encode_session_event,
    encode_telemetry,
)
from cloudai.proto import pb


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
    for event in (SessionEvent(forget="w.1"), SessionEvent(reset="abc123")):
        assert decode_session_event(encode_session_event(event)) == event
    for bad in (b"S1[]", b"S1{}", b"S1{", b"XX{}", b'S1{"forget": 3}'):
        with pytest.raises(BusDecodeError):
            decode_session_event(bad)
