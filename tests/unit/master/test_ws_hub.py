"""TelemetryHub fan-out: one frame per tick, direct writes for clients that keep up,
the buffered writer path (coalescing, order) for the others. Fake sockets, no server:
the fakes implement only the public API the hub uses (asyncio's transport methods,
WebSocketResponse's ``compress``, ``closed`` and ``send_frame``)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType

from cloudai.master.ws_hub import (
    RATE_WINDOW,
    HubClient,
    TelemetryHub,
    UpdateRate,
    light_load_tick,
    tick_interval,
    ws_text_header,
)
from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry


def unframe(data: bytes) -> bytes:
    """The payload of ``data``: exactly one unmasked, final text frame (RFC 6455)."""
    assert data[0] == 0x81 and not data[1] & 0x80
    length, start = data[1], 2
    if length == 126:
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10], "big"), 10
    assert len(data) == start + length
    return data[start:]


class FakeTransport:
    """An asyncio write transport, as far as the hub uses one."""

    def __init__(self, log: list[bytes]) -> None:
        self.chunks: list[bytes] = []  # what the hub wrote directly
        self.log = log  # every frame payload received, in order
        self.closing = False
        self.buffered = 0  # bytes the transport could not send yet

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(data))
        self.log.append(unframe(bytes(data)))  # one frame per write

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeWebSocket:
    """What the hub uses of aiohttp's WebSocketResponse."""

    def __init__(self, compress: int = 0) -> None:
        self.log: list[bytes] = []
        self.transport = FakeTransport(self.log)
        self.compress = compress
        self.closed = False
        self.sent: list[bytes] = []  # frames sent through send_frame (the writer path)
        self.gate: asyncio.Event | None = None  # set: send_frame waits (a slow socket)

    async def send_frame(self, message: bytes, opcode: WSMsgType) -> None:
        assert opcode == WSMsgType.TEXT
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(bytes(message))
        self.log.append(bytes(message))

    def messages(self) -> list[dict[str, Any]]:
        """Everything this client received, in order, whichever path it took."""
        return [orjson.loads(m) for m in self.log]


def join(
    hub: TelemetryHub, ws: FakeWebSocket, remote: str, worker_id: str | None = None
) -> HubClient:
    """Connect ``ws`` as http_app does: with the connection's transport."""
    return hub.connect(ws, worker_id, remote, transport=ws.transport)  # type: ignore[arg-type]


def state(worker_id: str, cpu: float) -> WorkerTelemetry:
    return WorkerTelemetry(worker_id, cpu_usage=cpu, is_active=True)


def busy(hub: TelemetryHub, updates_per_s: float, now: float) -> None:
    """Make the hub believe it has been receiving ``updates_per_s`` (its measured rate
    decides whether a tick is worth waiting for: ``light_load_tick``)."""
    hub._update_rate.observe(hub.stats.updates, now)
    hub._update_rate.rate = updates_per_s


async def settle(hub: TelemetryHub) -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_ws_text_header_lengths() -> None:
    assert ws_text_header(5) == b"\x81\x05"
    assert ws_text_header(126) == b"\x81\x7e\x00\x7e"
    assert ws_text_header(70_000) == b"\x81\x7f" + (70_000).to_bytes(8, "big")


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65_535, 65_536, 70_000])
def test_ws_text_header_frames_round_trip(length: int) -> None:
    payload = b"x" * length
    assert unframe(ws_text_header(length) + payload) == payload


def test_under_light_load_there_is_no_tick() -> None:
    # 10 clients x 1,000 updates/s = 10,000 frames/s: under half of 40,000, no tick
    assert light_load_tick(0.005, 10, 1000.0, 40_000) == 0.0
    # 100 clients x 1,000 updates/s: far over it, the tick as configured
    assert light_load_tick(0.005, 100, 1000.0, 40_000) == 0.005
    assert light_load_tick(0.025, 1000, 1000.0, 40_000) == 0.025
    assert light_load_tick(0.005, 30, 1000.0, 40_000) == 0.005  # 30,000 > 20,000
    assert light_load_tick(0.0, 100, 1000.0, 40_000) == 0.0  # no batching stays none


def test_the_update_rate_is_measured_over_windows() -> None:
    rate = UpdateRate()
    assert rate.observe(0, 10.0) == 0.0  # the first look starts a window
    assert rate.observe(50, 10.1) == 0.0  # shorter than RATE_WINDOW: the last figure
    assert rate.observe(500, 10.0 + RATE_WINDOW * 2) == pytest.approx(1000.0)
    assert rate.observe(500, 10.0 + RATE_WINDOW * 4) == 0.0  # quiet since


async def test_a_lone_update_goes_out_at_the_next_loop_iteration() -> None:
    hub = TelemetryHub(batch_interval=0.005)
    ws = FakeWebSocket()
    join(hub, ws, "c0")
    await settle(hub)
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    assert not isinstance(hub._flush_handle, asyncio.TimerHandle)  # no 5 ms wait
    await settle(hub)
    assert ws.messages()[-1]["w1"]["cpu_usage"] == 1.0


def test_the_tick_grows_with_the_clients_to_stay_under_the_frame_rate() -> None:
    assert tick_interval(0.005, 1, 25_000) == 0.005
    assert tick_interval(0.005, 100, 25_000) == 0.005  # 100 / 25,000 = 4 ms < 5 ms
    assert tick_interval(0.005, 1000, 25_000) == 0.04  # 1,000 frames per 40 ms tick
    assert tick_interval(0.0, 1000, 25_000) == 0.0  # no batching stays no batching


async def test_a_tick_with_many_clients_is_longer() -> None:
    hub = TelemetryHub(batch_interval=0.001, max_frame_rate=100.0)
    clients = [join(hub, FakeWebSocket(), f"c{i}") for i in range(5)]
    await settle(hub)
    loop = asyncio.get_running_loop()
    began = loop.time()
    busy(hub, 100.0, began)  # 5 clients x 100 updates/s: over the light-load share
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    handle = hub._flush_handle
    assert isinstance(handle, asyncio.TimerHandle)
    assert handle.when() - began >= 0.05 - 0.001  # 5 clients / 100 frames/s
    hub.flush()
    await settle(hub)
    for client in clients:
        assert client.ws.messages()[-1]["w1"]["cpu_usage"] == 1.0  # type: ignore[attr-defined]


async def test_clients_that_keep_up_get_one_direct_write_per_tick() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    sockets = [FakeWebSocket() for _ in range(3)]
    clients = [join(hub, ws, f"c{i}") for i, ws in enumerate(sockets)]
    await settle(hub)
    assert all(ws.sent == [b"{}"] for ws in sockets)  # the snapshot goes through the writer
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    hub.on_telemetry(state("w2", 2.0), TelemetryEvent.UPDATE)
    await settle(hub)
    for ws in sockets:
        assert len(ws.transport.chunks) == 1  # both workers in one frame, written directly
        assert ws.messages()[1].keys() == {"w1", "w2"}
    assert hub.stats.direct_sends == 3 and hub.stats.frames_built == 1
    for client in clients:
        await hub.disconnect(client)


async def test_a_blocked_client_is_buffered_and_coalesced_others_unaffected() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    fast, slow = FakeWebSocket(), FakeWebSocket()
    c_fast = join(hub, fast, "fast")
    c_slow = join(hub, slow, "slow")
    await settle(hub)
    slow.gate = asyncio.Event()  # its next send blocks (socket full)
    slow.transport.buffered = 70_000  # and its transport holds what the kernel refused
    for cpu in range(1, 6):
        hub.on_telemetry(state("w1", float(cpu)), TelemetryEvent.UPDATE)
        await settle(hub)
    assert [m["w1"]["cpu_usage"] for m in fast.messages()[1:]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert slow.transport.chunks == []  # never written directly while behind
    slow.transport.buffered = 0
    slow.gate.set()
    await settle(hub)
    got = [m["w1"]["cpu_usage"] for m in slow.messages()[1:]]
    assert got[0] == 1.0 and got[-1] == 5.0  # it resumes with the latest state
    assert len(got) < 5  # what piled up meanwhile was coalesced
    hub.on_telemetry(state("w1", 6.0), TelemetryEvent.UPDATE)
    await settle(hub)
    assert slow.messages()[-1]["w1"]["cpu_usage"] == 6.0  # caught up: direct again
    assert len(slow.transport.chunks) == 1
    await hub.disconnect(c_fast)
    await hub.disconnect(c_slow)


async def test_compressed_closing_and_closed_clients_take_the_writer_path() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    compressed, closing, closed = FakeWebSocket(compress=15), FakeWebSocket(), FakeWebSocket()
    clients = [join(hub, compressed, "z"), join(hub, closing, "x"), join(hub, closed, "c")]
    await settle(hub)
    closing.transport.closing = True
    closed.closed = True  # the close frame went out: nothing may follow it directly
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    await settle(hub)
    assert compressed.transport.chunks == [] and len(compressed.sent) == 2
    assert closing.transport.chunks == [] and closed.transport.chunks == []
    assert hub.stats.direct_sends == 0
    for client in clients:
        await hub.disconnect(client)


async def test_without_a_transport_every_frame_goes_through_the_writer() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = hub.connect(ws, None, "plain")  # type: ignore[arg-type]
    await settle(hub)
    for cpu in (1.0, 2.0):
        hub.on_telemetry(state("w1", cpu), TelemetryEvent.UPDATE)
        await settle(hub)
    assert [m.get("w1", {}).get("cpu_usage") for m in ws.messages()] == [None, 1.0, 2.0]
    assert ws.transport.chunks == [] and hub.stats.direct_sends == 0
    assert hub.stats.frames_sent == 3 and client.frames_sent == 3
    await hub.disconnect(client)


async def test_per_worker_clients_get_only_their_worker() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = join(hub, ws, "one", "w2")
    await settle(hub)
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    hub.on_telemetry(state("w2", 2.0), TelemetryEvent.UPDATE)
    await settle(hub)
    assert ws.messages() == [{}, {"w2": state("w2", 2.0).to_json()}]
    await hub.disconnect(client)


async def test_nothing_is_encoded_without_clients_and_snapshots_are_current() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    for cpu in range(100):
        hub.on_telemetry(state("w1", float(cpu)), TelemetryEvent.UPDATE)
    hub.on_telemetry(state("w2", 1.0), TelemetryEvent.UPDATE)
    assert hub._encoded == {}  # no client: no encoding on the heartbeat path
    snapshot = hub.snapshot()
    assert {w: orjson.loads(b"{" + f + b"}")[w]["cpu_usage"] for w, f in snapshot.items()} == {
        "w1": 99.0,
        "w2": 1.0,
    }
    assert hub.snapshot("w2") == {"w2": snapshot["w2"]} and hub.snapshot("nope") == {}
    hub.on_telemetry(state("w2", 1.0), TelemetryEvent.REMOVED)
    assert set(hub.snapshot()) == {"w1"}


async def test_many_clients_are_served_in_chunks_and_in_order(monkeypatch) -> None:
    import cloudai.master.ws_hub as ws_hub

    monkeypatch.setattr(ws_hub, "DELIVERY_CHUNK", 4)
    hub = TelemetryHub(batch_interval=0.0)
    sockets = [FakeWebSocket() for _ in range(10)]
    clients = [join(hub, ws, f"c{i}") for i, ws in enumerate(sockets)]
    await settle(hub)
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    hub.flush()  # the first 4 clients at once, the others on later loop iterations
    assert sum(1 for ws in sockets if ws.transport.chunks) == 4
    hub.on_telemetry(state("w1", 2.0), TelemetryEvent.UPDATE)
    hub.flush()  # queued behind the first tick
    # A client not served yet (clients are a set: which ones went first is arbitrary)
    # leaves before its turn, without an await in between: it is skipped.
    late = next(i for i, ws in enumerate(sockets) if not ws.transport.chunks)
    hub._forget(clients[late])
    await settle(hub)
    await hub.disconnect(clients[late])
    for i, ws in enumerate(sockets):
        if i != late:
            assert [m["w1"]["cpu_usage"] for m in ws.messages()[1:]] == [1.0, 2.0]
    assert sockets[late].messages() == [{}]
    del clients[late]
    for client in clients:
        await hub.disconnect(client)


async def test_liveness_states_reach_clients_and_snapshots() -> None:
    """The hub subscribes to every event: a suspect worker, a worker known from the store
    but not back yet (unknown) are on the stream with their ``state``; a client that
    connects later gets them in its snapshot."""
    from cloudai.telemetry.manager import TelemetryManager

    clock = [1000.0]
    manager = TelemetryManager(30.0, clock=lambda: clock[0], wall_clock=lambda: 1.7e9)
    hub = TelemetryHub(batch_interval=0.0)
    manager.subscribe(hub.on_telemetry)  # as server.py does: no events named
    ws = FakeWebSocket()
    client = join(hub, ws, "c1")
    await settle(hub)
    manager.add_known(["gone"])
    await settle(hub)
    manager.register_worker("w1")
    await settle(hub)
    manager.process_heartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=1.0))
    await settle(hub)
    clock[0] += 16.0
    manager.check_inactive()
    await settle(hub)
    states = [(w, v["state"], v["is_active"]) for m in ws.messages() for w, v in m.items()]
    assert states == [
        ("gone", "unknown", False),
        ("w1", "registered", True),
        ("w1", "active", True),
        ("w1", "suspect", True),
    ]
    late = FakeWebSocket()
    other = join(hub, late, "c2")
    await settle(hub)
    snapshot = late.messages()[0]
    assert {w: v["state"] for w, v in snapshot.items()} == {"gone": "unknown", "w1": "suspect"}
    assert list(snapshot["w1"])[-2:] == ["storage_usage", "state"]  # added at the end
    await hub.disconnect(client)
    await hub.disconnect(other)
