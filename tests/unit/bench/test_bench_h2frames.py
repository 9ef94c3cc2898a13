from __future__ import annotations

import pytest

from cloudai.bench import h2frames as h2
from cloudai.bench.heartbeats import HeartbeatTemplate
from cloudai.bench.schedule import cpu_to_tag
from cloudai.proto import pb


def test_frame_round_trip_through_an_incremental_reader() -> None:
    frames = [
        h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, 1, b"abc"),
        h2.frame(h2.DATA, h2.FLAG_END_STREAM, 1, b"x" * 70_000),  # > 16 bit length
        h2.frame(h2.PING, 0, 0, b"12345678"),
        h2.settings({h2.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}),
    ]
    wire = b"".join(frames)
    reader = h2.FrameReader()
    got = []
    for i in range(0, len(wire), 7):  # 7-byte chunks: headers split across reads
        got += list(reader.feed(wire[i : i + 7]))
    assert len(reader) == 0
    assert [(f.kind, f.flags, f.stream_id, len(f.payload)) for f in got] == [
        (h2.HEADERS, h2.FLAG_END_HEADERS, 1, 3),
        (h2.DATA, h2.FLAG_END_STREAM, 1, 70_000),
        (h2.PING, 0, 0, 8),
        (h2.SETTINGS, 0, 0, 6),
    ]
    assert h2.parse_settings(got[3].payload) == {h2.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}


def test_reader_keeps_an_incomplete_frame() -> None:
    reader = h2.FrameReader()
    wire = h2.frame(h2.DATA, 0, 3, b"hello")
    assert list(reader.feed(wire[:-1])) == []
    assert len(reader) == len(wire) - 1
    (f,) = list(reader.feed(wire[-1:]))
    assert f.payload == b"hello" and f.stream_id == 3


def test_window_update_masks_the_reserved_bit() -> None:
    (f,) = list(h2.FrameReader().feed(h2.window_update(5, 1000)))
    assert f.kind == h2.WINDOW_UPDATE and f.stream_id == 5
    assert int.from_bytes(f.payload, "big") == 1000


@pytest.mark.parametrize(
    ("value", "prefix"), [(0, 5), (30, 5), (31, 5), (1337, 5), (10, 7), (2**20, 4)]
)
def test_hpack_integers(value: int, prefix: int) -> None:
    encoded = h2.encode_int(value, prefix)
    assert h2.decode_int(encoded, 0, prefix) == (value, len(encoded))


def test_rfc7541_integer_example() -> None:
    # RFC 7541 C.1.2: 1337 with a 5-bit prefix is 1f 9a 0a.
    assert h2.encode_int(1337, 5) == bytes((0x1F, 0x9A, 0x0A))


def test_request_headers_decode_to_a_grpc_request() -> None:
    block = h2.request_headers("/cluster.MasterWorker/SendHeartbeat", "127.0.0.1:50051")
    assert h2.decode_headers(block) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/cluster.MasterWorker/SendHeartbeat"),
        (":authority", "127.0.0.1:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "cloudai-bench"),
    ]


def test_decoder_reports_huffman_and_dynamic_entries_as_unknown() -> None:
    block = bytes((0x88,))  # indexed, static 8: :status 200
    block += bytes((0xBE,))  # indexed, 62: a dynamic table entry
    block += b"\x40"  # literal with incremental indexing, new name:
    block += bytes((0x80 | 2,)) + b"\xff\xff"  # the name, Huffman-coded (2 bytes)
    block += bytes((1,)) + b"0"  # the value, plain "0"
    decoded = h2.decode_headers(block)
    assert decoded[0] == (":status", "200")
    assert decoded[1] == (None, None)
    assert decoded[2] == (None, "0")


def test_grpc_messages_split_and_keep_whole_messages_only() -> None:
    data = h2.grpc_message(b"one") + h2.grpc_message(b"") + h2.grpc_message(b"three")
    assert h2.grpc_messages(data) == [b"one", b"", b"three"]
    assert h2.grpc_messages(data[:-1]) == [b"one", b""]


def test_strip_padding_and_priority() -> None:
    payload = bytes((2,)) + b"\x00\x00\x00\x01\x10" + b"hdr" + b"\x00\x00"
    flags = h2.FLAG_PADDED | h2.FLAG_PRIORITY
    assert h2.strip_padding(flags, payload, priority=True) == b"hdr"
    assert h2.strip_padding(0, b"plain") == b"plain"


def test_heartbeat_template_is_a_valid_heartbeat_with_its_tag() -> None:
    template = HeartbeatTemplate("bench-00003", tasks=3)
    hb = pb.Heartbeat.FromString(template.encode(123_456))
    assert hb.worker_id == "bench-00003"
    assert cpu_to_tag(hb.cpu_usage) == 123_456
    assert [t.task_id for t in hb.running_tasks] == [f"bench-00003-t{i}" for i in range(3)]
    assert hb.memory_usage == 40.0 and hb.storage_usage == 10.0
    assert pb.Heartbeat.FromString(HeartbeatTemplate("w", tasks=0).encode(1)).running_tasks == []
