"""The load generator's HTTP/2 client against a scripted server (no sockets)."""

from __future__ import annotations

from typing import Any

from cloudai.bench import h2frames as h2
from cloudai.bench.h2client import H2Connection


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def sent_frames(transport: FakeTransport) -> list[h2.Frame]:
    data = bytes(transport.written)
    transport.written.clear()
    if data.startswith(h2.PREFACE):
        data = data[len(h2.PREFACE) :]
    return list(h2.FrameReader().feed(data))


def new_connection() -> tuple[H2Connection, FakeTransport, list[tuple[Any, bool, Any, str]]]:
    answers: list[tuple[Any, bool, Any, str]] = []
    conn = H2Connection("127.0.0.1:1", lambda *a: answers.append(a))
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, answers


def trailers(status: int, message: str = "") -> bytes:
    block = h2.encode_int(0, 4) + h2.encode_int(11, 7) + b"grpc-status"
    block += h2.encode_int(len(str(status)), 7) + str(status).encode()
    if message:
        block += h2.encode_int(0, 4) + h2.encode_int(12, 7) + b"grpc-message"
        block += h2.encode_int(len(message), 7) + message.encode()
    return block


async def test_unary_call_success_and_failure() -> None:
    conn, transport, answers = new_connection()
    conn.data_received(h2.settings({}))
    assert conn.ready.done()
    headers = h2.request_headers("/svc/M", conn.authority)
    conn.unary(headers, b"req1", "a")
    conn.unary(headers, b"req2", "b")
    conn.flush()
    frames = sent_frames(transport)
    kinds = [(f.kind, f.stream_id) for f in frames]
    assert (h2.HEADERS, 1) in kinds and (h2.HEADERS, 3) in kinds
    data = [f for f in frames if f.kind == h2.DATA]
    assert [h2.grpc_messages(f.payload) for f in data] == [[b"req1"], [b"req2"]]
    assert all(f.flags & h2.FLAG_END_STREAM for f in data)
    assert conn.in_flight == 2
    # Stream 1: response headers, a message, OK trailers. Stream 3: trailers-only error.
    conn.data_received(
        h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 1, bytes((0x88,)))
        + h2.frame(h2.DATA, 0, 1, h2.grpc_message(b"\x08\x01"))
        + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 1, trailers(0))
        + h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS | h2.FLAG_END_STREAM, 3, trailers(5, "nope"))
    )
    assert answers == [("a", True, b"\x08\x01", ""), ("b", False, None, "grpc-status 5: nope")]
    assert conn.in_flight == 0


async def test_settings_ping_and_window_updates_are_answered() -> None:
    conn, transport, _answers = new_connection()
    conn.data_received(h2.settings({h2.SETTINGS_MAX_FRAME_SIZE: 20_000}))
    conn.data_received(h2.frame(h2.PING, 0, 0, b"abcdefgh"))
    conn.flush()
    frames = sent_frames(transport)
    assert any(f.kind == h2.SETTINGS and f.flags & h2.FLAG_ACK for f in frames)
    assert any(
        f.kind == h2.PING and f.flags & h2.FLAG_ACK and f.payload == b"abcdefgh" for f in frames
    )


async def test_flow_control_blocks_then_releases_in_order() -> None:
    conn, transport, _answers = new_connection()
    conn.data_received(h2.settings({h2.SETTINGS_INITIAL_WINDOW_SIZE: 100}))
    stream = conn.open_stream(h2.request_headers("/svc/S", conn.authority), "s")
    for i in range(5):
        assert conn.send(stream, bytes([i]) * 45)  # 50 bytes with the gRPC prefix
    conn.flush()
    data = [f for f in sent_frames(transport) if f.kind == h2.DATA]
    assert len(data) == 2  # the stream window (100) holds two messages
    assert conn.backlog == 150
    conn.data_received(h2.window_update(stream, 1000))
    conn.end_stream(stream)
    conn.flush()
    data = [f for f in sent_frames(transport) if f.kind == h2.DATA]
    assert [f.payload[5:6] for f in data[:3]] == [b"\x02", b"\x03", b"\x04"]
    assert data[-1].payload == b"" and data[-1].flags & h2.FLAG_END_STREAM
    assert conn.backlog == 0


async def test_large_messages_are_split_to_the_max_frame_size() -> None:
    conn, transport, _answers = new_connection()
    conn.data_received(h2.settings({h2.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}))
    conn.data_received(h2.window_update(0, 1 << 20))
    conn.unary(h2.request_headers("/svc/M", conn.authority), b"m" * 40_000, "big")
    conn.flush()
    data = [f for f in sent_frames(transport) if f.kind == h2.DATA]
    assert [len(f.payload) for f in data] == [16_384, 16_384, 40_005 - 32_768]
    assert [bool(f.flags & h2.FLAG_END_STREAM) for f in data] == [False, False, True]


async def test_goaway_and_connection_loss_fail_open_calls() -> None:
    conn, _transport, answers = new_connection()
    conn.data_received(h2.settings({}))
    headers = h2.request_headers("/svc/M", conn.authority)
    for token in ("a", "b", "c"):
        conn.unary(headers, b"x", token)
    # GOAWAY: the server handled stream 1 at most; 3 and 5 fail now.
    conn.data_received(h2.frame(h2.GOAWAY, 0, 0, (1).to_bytes(4, "big") + bytes(4)))
    assert sorted(a[0] for a in answers) == ["b", "c"]
    conn.unary(headers, b"x", "late")
    assert answers[-1][0] == "late" and not answers[-1][1]
    conn.connection_lost(None)
    assert sorted(a[0] for a in answers) == ["a", "b", "c", "late"]
    assert all(not ok for _t, ok, _m, _e in answers)


async def test_reset_stream_fails_the_call() -> None:
    conn, _transport, answers = new_connection()
    conn.data_received(h2.settings({}))
    conn.unary(h2.request_headers("/svc/M", conn.authority), b"x", "r")
    conn.data_received(h2.frame(h2.RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    assert answers == [("r", False, None, "stream reset by the server (code 8)")]
