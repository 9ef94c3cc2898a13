"""TelemetryHub with subscriptions, event topics and permessage-deflate: fake sockets
(asyncio's transport methods and what the hub uses of aiohttp's WebSocketResponse), no
server. Each distinct subscription is encoded once per tick, however many clients share
it; clients that chose nothing get exactly the default frames."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType

from cloudai.master.subscriptions import DEFAULT, Subscription, parse_query
from cloudai.master.ws_hub import HubClient, TelemetryHub, deflate_message
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry


def parse_frames(data: bytes) -> list[tuple[bool, bytes]]:
    """(compressed, payload) of each unmasked, final server frame in ``data``."""
    frames = []
    while data:
        first, length, start = data[0], data[1], 2
        assert first in (0x81, 0xC1) and not length & 0x80
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((first == 0xC1, data[start : start + length]))
        data = data[start + length :]
    return frames


def inflate(payload: bytes) -> bytes:
    """What a permessage-deflate client does with one compressed message."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


class FakeTransport:
    def __init__(self, log: list[bytes]) -> None:
        self.log = log
        self.writes = 0
        self.compressed = 0
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        for compressed, payload in parse_frames(bytes(data)):
            self.compressed += compressed
            self.log.append(inflate(payload) if compressed else payload)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeWebSocket:
    def __init__(self, compress: int = 0) -> None:
        self.log: list[bytes] = []
        self.transport = FakeTransport(self.log)
        self.compress = compress
        self.closed = False
        self.drains = 0

    async def send_frame(self, message: bytes, opcode: WSMsgType) -> None:
        assert opcode == WSMsgType.TEXT and not self.compress
        self.log.append(bytes(message))

    async def drain(self) -> None:
        self.drains += 1

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(m) for m in self.log]

    def telemetry(self) -> list[dict[str, Any]]:
        return [m for m in self.messages() if not isinstance(m.get("topic"), str)]

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages() if isinstance(m.get("topic"), str)]


def join(hub: TelemetryHub, ws: FakeWebSocket, sub: Subscription = DEFAULT) -> HubClient:
    return hub.connect(
        ws,  # type: ignore[arg-type]
        None,
        "client",
        transport=ws.transport,  # type: ignore[arg-type]
        subscription=sub,
        drain=ws.drain,
    )


def state(worker_id: str, cpu: float, **kwargs: Any) -> WorkerTelemetry:
    return WorkerTelemetry(worker_id, cpu_usage=cpu, is_active=True, state="active", **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def update(hub: TelemetryHub, *states: WorkerTelemetry) -> None:
    for s in states:
        hub.on_telemetry(s, TelemetryEvent.UPDATE)


async def test_ten_subscriptions_over_many_clients_are_ten_encodes_per_tick() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    update(hub, *(state(f"gpu-{i}", 0.0) for i in range(10)))
    choices = [parse_query({"workers": f"gpu-{i}", "fields": "cpu_usage"}) for i in range(10)]
    sockets = [FakeWebSocket() for _ in range(100)]
    clients = [join(hub, ws, choices[i % 10]) for i, ws in enumerate(sockets)]
    await settle()
    assert hub.subscription_groups == 10
    for i, ws in enumerate(sockets):  # each snapshot: its worker, its field
        assert ws.messages() == [
            {f"gpu-{i % 10}": {"worker_id": f"gpu-{i % 10}", "cpu_usage": 0.0}}
        ]
    before = hub.stats.group_frames
    update(hub, *(state(f"gpu-{i}", 1.0) for i in range(10)))
    await settle()
    assert hub.stats.group_frames - before == 10  # one frame per group, not per client
    assert hub.stats.direct_sends == 100
    for i, ws in enumerate(sockets):
        assert ws.messages()[-1] == {
            f"gpu-{i % 10}": {"worker_id": f"gpu-{i % 10}", "cpu_usage": 1.0}
        }
    for client in clients:
        await hub.disconnect(client)
    assert hub.subscription_groups == 0


async def test_a_client_that_chose_nothing_gets_the_default_frames_byte_for_byte() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    plain, chosen = FakeWebSocket(), FakeWebSocket()
    c1 = join(hub, plain)
    c2 = join(hub, chosen, parse_query({"workers": "w*"}))
    await settle()
    update(hub, state("w1", 1.0), state("x1", 2.0))
    await settle()
    assert plain.log[-1] == b"{" + hub.snapshot()["w1"] + b"," + hub.snapshot()["x1"] + b"}"
    assert chosen.log[-1] == b"{" + hub.snapshot()["w1"] + b"}"  # fields: all, as encoded
    assert hub.stats.group_frames == 1
    await hub.disconnect(c1)
    await hub.disconnect(c2)


async def test_resubscribe_acknowledges_then_sends_a_snapshot_of_the_new_choice() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    update(hub, state("a1", 1.0), state("b1", 2.0))
    ws = FakeWebSocket()
    client = join(hub, ws)
    await settle()
    hub.resubscribe(client, parse_query({"workers": "b*", "fields": "state"}))
    await settle()
    ack, snapshot = ws.messages()[1:]
    assert ack == {
        "topic": "subscription",
        "event": {"workers": ["b*"], "fields": ["state"], "topics": ["telemetry"]},
    }
    assert snapshot == {"b1": {"worker_id": "b1", "state": "active"}}
    update(hub, state("a1", 3.0), state("b1", 4.0))
    await settle()
    assert ws.messages()[-1] == {"b1": {"worker_id": "b1", "state": "active"}}
    # Only topics: the telemetry choice is unchanged, so no new snapshot.
    count = len(ws.log)
    hub.resubscribe(client, Subscription(("b*",), ("state",), frozenset({"telemetry", "tasks"})))
    await settle()
    assert len(ws.log) == count + 1 and ws.messages()[-1]["topic"] == "subscription"
    await hub.disconnect(client)


async def test_a_tick_in_flight_skips_a_client_that_changed_its_choice() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = join(hub, ws)
    await settle()
    hub._batch["w1"] = state("w1", 1.0)  # a tick's update, about to be delivered
    hub._latest["w1"] = hub._batch["w1"]
    hub.resubscribe(client, parse_query({"workers": "x*"}))
    hub.flush()
    await settle()
    assert ws.telemetry() == [{}, {}]  # the first snapshot and the new (empty) one only


async def test_events_go_to_their_topic_only_encoded_once() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    plain, alerts, events_only = FakeWebSocket(), FakeWebSocket(), FakeWebSocket()
    clients = [
        join(hub, plain),
        join(hub, alerts, parse_query({"topics": "telemetry,alerts"})),
        join(hub, events_only, parse_query({"topics": "alerts,tasks"})),
    ]
    await settle()
    assert hub.publish("alerts", {"rule": "cpu", "worker_id": "w1"}) == 2
    assert hub.publish("tasks", {"task_id": "t1", "status": "running"}) == 1
    assert hub.publish("transitions", {"worker_id": "w1"}) == 0
    update(hub, state("w1", 1.0))
    await settle()
    assert plain.events() == [] and len(plain.telemetry()) == 2
    assert alerts.events() == [{"topic": "alerts", "event": {"rule": "cpu", "worker_id": "w1"}}]
    assert len(alerts.telemetry()) == 2
    assert [e["topic"] for e in events_only.events()] == ["alerts", "tasks"]
    assert events_only.telemetry() == []  # no snapshot, no telemetry
    with pytest.raises(ValueError, match="unknown topic"):
        hub.publish("gossip", {})
    assert hub.publish("alerts", {"bad": object()}) == 0 and hub.stats.publish_errors == 1
    for client in clients:
        await hub.disconnect(client)


async def test_transitions_are_published_when_a_workers_state_changes() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = join(hub, ws, parse_query({"topics": "transitions"}))
    await settle()
    hub.on_telemetry(
        WorkerTelemetry("w1", is_active=True, state="registered"), TelemetryEvent.UPDATE
    )
    update(hub, state("w1", 1.0), state("w1", 2.0))  # active, then no change
    hub.on_telemetry(
        WorkerTelemetry("w1", is_active=False, state="inactive"), TelemetryEvent.INACTIVE
    )
    hub.on_telemetry(WorkerTelemetry("w1", state="removed"), TelemetryEvent.REMOVED)
    await settle()
    moves = [(e["event"]["from"], e["event"]["to"]) for e in ws.events()]
    assert moves == [
        (None, "registered"),
        ("registered", "active"),
        ("active", "inactive"),
        ("inactive", "removed"),
    ]
    assert ws.events()[2]["event"]["is_active"] is False
    await hub.disconnect(client)


async def test_a_slow_client_gets_events_in_order_before_its_coalesced_telemetry() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = join(hub, ws, parse_query({"topics": "telemetry,alerts"}))
    await settle()
    ws.transport.buffered = 1  # the socket is backed up: everything goes to the buffer
    update(hub, state("w1", 1.0))
    hub.flush()
    hub.publish("alerts", {"n": 1})
    update(hub, state("w1", 2.0))
    hub.flush()
    hub.publish("alerts", {"n": 2})
    assert client.buffer.coalesced == 1
    await settle()
    assert ws.messages()[1:] == [
        {"topic": "alerts", "event": {"n": 1}},
        {"topic": "alerts", "event": {"n": 2}},
        {"w1": state("w1", 2.0).to_json()},
    ]
    await hub.disconnect(client)


async def test_deflate_clients_share_one_compression_per_tick_and_group() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    zipped = [FakeWebSocket(compress=15) for _ in range(5)]
    plain = FakeWebSocket()
    clients = [join(hub, ws) for ws in [*zipped, plain]]
    await settle()
    assert all(c.deflate == 15 for c in clients[:5]) and clients[5].deflate == 0
    assert all(ws.drains == 1 for ws in zipped)  # the snapshot: the writer path, drained
    before = hub.stats.compressed_frames
    update(hub, *(state(f"w{i}", 1.0, running_tasks=[]) for i in range(20)))
    await settle()
    assert hub.stats.compressed_frames - before == 1  # one compression for five clients
    for ws in zipped:
        assert ws.transport.compressed == 2  # snapshot and tick, both compressed
        assert ws.log[-1] == plain.log[-1]  # inflated: the same bytes as the plain client's
    assert plain.transport.compressed == 0
    for client in clients:
        await hub.disconnect(client)


async def test_a_slow_deflate_client_is_compressed_per_send_and_drained() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket(compress=15)
    client = join(hub, ws)
    await settle()
    ws.transport.buffered = 1  # backed up: the writer path
    update(hub, state("w1", 1.0))
    hub.flush()
    await settle()
    update(hub, state("w1", 2.0))
    hub.flush()
    await settle()
    assert ws.drains == 3 and ws.transport.compressed == 3
    assert ws.messages()[-1] == {"w1": state("w1", 2.0).to_json()}
    await hub.disconnect(client)


def test_deflate_message_is_a_complete_message_without_context() -> None:
    payload = b'{"w1":{"cpu_usage":1.0}}' * 50
    data = deflate_message(payload, 15)
    assert not data.endswith(b"\x00\x00\xff\xff") and len(data) < len(payload) // 5
    assert inflate(data) == payload
    # A client that keeps its window (context takeover) inflates it as well.
    inflater = zlib.decompressobj(-15)
    for _ in range(3):
        assert inflater.decompress(data + b"\x00\x00\xff\xff") == payload


async def test_a_small_window_client_is_left_to_aiohttp() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket(compress=8)  # zlib cannot write an 8-bit window raw stream
    client = join(hub, ws)
    assert client.transport is None and client.deflate == 0
    await hub.disconnect(client)
