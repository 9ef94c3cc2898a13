from __future__ import annotations

import pytest

from cloudai.bench import wsframes as ws


def test_single_frames_of_every_length_class() -> None:
    parser = ws.FrameParser()
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536]
    wire = b"".join(ws.server_frame(ws.OP_TEXT, p) for p in payloads)
    assert parser.feed(wire) == [(ws.OP_TEXT, p) for p in payloads]
    assert parser.buffered == 0


def test_frames_split_anywhere_across_reads() -> None:
    payloads = [b'{"a":1}', b"b" * 300, b"c" * 70_000]
    wire = b"".join(ws.server_frame(ws.OP_TEXT, p) for p in payloads)
    for chunk in (1, 2, 3, 9, 1000):
        parser = ws.FrameParser()
        got = []
        for i in range(0, len(wire), chunk):
            got += parser.feed(wire[i : i + chunk])
        assert got == [(ws.OP_TEXT, p) for p in payloads]


def test_fragmented_message_with_a_control_frame_in_between() -> None:
    wire = (
        ws.server_frame(ws.OP_TEXT, b"hel", fin=False)
        + ws.server_frame(ws.OP_PING, b"p")
        + ws.server_frame(ws.OP_CONTINUATION, b"lo ", fin=False)
        + ws.server_frame(ws.OP_CONTINUATION, b"world")
    )
    assert ws.FrameParser().feed(wire) == [(ws.OP_PING, b"p"), (ws.OP_TEXT, b"hello world")]


def test_masked_frames_are_unmasked() -> None:
    frame = ws.client_frame(ws.OP_TEXT, b"masked payload", key=b"\x01\x02\x03\x04")
    assert frame[1] & 0x80  # the mask bit is set
    assert b"masked payload" not in frame
    assert ws.FrameParser().feed(frame) == [(ws.OP_TEXT, b"masked payload")]


def test_client_frame_lengths() -> None:
    for n in (0, 125, 126, 70_000):
        frame = ws.client_frame(ws.OP_BINARY, b"a" * n)
        assert ws.FrameParser().feed(frame) == [(ws.OP_BINARY, b"a" * n)]


def test_handshake_response_checks_status_and_accept() -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    assert ws.accept_value(key) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3
    good = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    assert ws.parse_handshake_response(good[:20], key) is None
    assert ws.parse_handshake_response(good + b"\x81\x00", key) == len(good)
    with pytest.raises(ws.HandshakeError, match="refused"):
        ws.parse_handshake_response(b"HTTP/1.1 404 Not Found\r\n\r\n", key)
    with pytest.raises(ws.HandshakeError, match="Accept"):
        ws.parse_handshake_response(good.replace(b"s3pP", b"AAAA"), key)


def test_handshake_request_is_an_upgrade() -> None:
    request = ws.handshake_request("127.0.0.1:8080", "/ws/telemetry", b"k==")
    assert request.startswith(b"GET /ws/telemetry HTTP/1.1\r\n")
    assert b"Upgrade: websocket\r\n" in request and request.endswith(b"\r\n\r\n")
