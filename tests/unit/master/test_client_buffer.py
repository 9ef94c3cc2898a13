from __future__ import annotations

import orjson

from cloudai.master.client_buffer import ClientBuffer
from cloudai.telemetry.encoding import join_fragments


def frag(worker: str, value: int) -> bytes:
    return orjson.dumps({worker: {"v": value}})[1:-1]


def offer(buf: ClientBuffer, **values: int) -> bool:
    fragments = {w: frag(w, v) for w, v in values.items()}
    return buf.offer(join_fragments(fragments.values()), fragments)


def test_keeping_up_sends_the_shared_frame_itself() -> None:
    buf = ClientBuffer()
    fragments = {"a": frag("a", 1)}
    shared = join_fragments(fragments.values())
    assert buf.offer(shared, fragments) is True
    assert buf.take() is shared
    assert buf.take() is None


def test_backlog_coalesces_per_worker_to_latest() -> None:
    buf = ClientBuffer()
    assert offer(buf, a=1) is True
    assert offer(buf, b=1) is False
    assert offer(buf, a=2, c=1) is False
    assert offer(buf, a=3) is False
    assert len(buf) == 3
    assert buf.coalesced == 2
    frame = buf.take()
    assert frame is not None
    assert orjson.loads(frame) == {"a": {"v": 3}, "b": {"v": 1}, "c": {"v": 1}}
    assert buf.take() is None


def test_memory_is_bounded_by_worker_count() -> None:
    buf = ClientBuffer()
    for i in range(10_000):
        offer(buf, **{f"w{i % 50}": i})
    assert len(buf) == 50


def test_empty_snapshot_frame_is_sent() -> None:
    buf = ClientBuffer()
    assert buf.offer(b"{}", {}) is True
    assert buf.take() == b"{}"


def test_events_go_first_in_order_and_are_bounded() -> None:
    buf = ClientBuffer(max_events=3)
    assert buf.offer_event(b"e0") is True
    offer(buf, a=1)
    for i in range(1, 5):
        assert buf.offer_event(f"e{i}".encode()) is False
    assert buf.events_dropped == 2  # e0 and e1: the oldest
    assert [buf.take() for _ in range(3)] == [b"e2", b"e3", b"e4"]
    frame = buf.take()
    assert frame is not None and orjson.loads(frame) == {"a": {"v": 1}}
    assert buf.take() is None and buf.is_empty


def test_replace_drops_pending_telemetry_but_keeps_events() -> None:
    buf = ClientBuffer()
    offer(buf, a=1, b=2)
    buf.offer_event(b"ack")
    assert buf.replace(b"{}", {}) is False
    assert buf.take() == b"ack" and buf.take() == b"{}" and buf.take() is None
    offer(buf, a=1)
    buf.drop_telemetry()
    assert buf.is_empty
