"""TelemetryHub fan-out: one frame per tick, direct writes for clients that keep up,
the buffered writer path (coalescing, order) for the others. Fake sockets, no server."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import WSMsgType
from aiohttp.base_protocol import BaseProtocol

from cloudai.bench.wsframes import FrameParser
from cloudai.master.ws_hub import TelemetryHub, tick_interval, ws_text_header
from cloudai.telemetry.manager import TelemetryEvent
from cloudai.telemetry.model import WorkerTelemetry


class FakeTransport:
    def __init__(self, log: list[bytes]) -> None:
        self.chunks: list[bytes] = []  # what the hub wrote directly
        self.log = log  # every frame payload received, in order
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))
        self.log += [payload for _opcode, payload in FrameParser().feed(bytes(data))]

    def is_closing(self) -> bool:
        return self.closing


class FakeWriter:
    def __init__(self, transport: FakeTransport, protocol: BaseProtocol) -> None:
        self.transport = transport
        self.protocol = protocol


class FakeWebSocket:
    """What the hub uses of aiohttp's WebSocketResponse."""

    def __init__(self, compress: int = 0) -> None:
        self.log: list[bytes] = []
        self.transport = FakeTransport(self.log)
        self.protocol = BaseProtocol(asyncio.get_running_loop())
        self._writer = FakeWriter(self.transport, self.protocol)
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


def state(worker_id: str, cpu: float) -> WorkerTelemetry:
    return WorkerTelemetry(worker_id, cpu_usage=cpu, is_active=True)


async def settle(hub: TelemetryHub) -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_ws_text_header_lengths() -> None:
    assert ws_text_header(5) == b"\x81\x05"
    assert ws_text_header(126) == b"\x81\x7e\x00\x7e"
    assert ws_text_header(70_000) == b"\x81\x7f" + (70_000).to_bytes(8, "big")


def test_the_tick_grows_with_the_clients_to_stay_under_the_frame_rate() -> None:
    assert tick_interval(0.005, 1, 25_000) == 0.005
    assert tick_interval(0.005, 100, 25_000) == 0.005  # 100 / 25,000 = 4 ms < 5 ms
    assert tick_interval(0.005, 1000, 25_000) == 0.04  # 1,000 frames per 40 ms tick
    assert tick_interval(0.0, 1000, 25_000) == 0.0  # no batching stays no batching


async def test_a_tick_with_many_clients_is_longer() -> None:
    hub = TelemetryHub(batch_interval=0.001, max_frame_rate=100.0)
    clients = [hub.connect(FakeWebSocket(), None, f"c{i}") for i in range(5)]  # type: ignore[arg-type]
    await settle(hub)
    loop = asyncio.get_running_loop()
    began = loop.time()
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
    clients = [hub.connect(ws, None, f"c{i}") for i, ws in enumerate(sockets)]  # type: ignore[arg-type]
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
    c_fast = hub.connect(fast, None, "fast")  # type: ignore[arg-type]
    c_slow = hub.connect(slow, None, "slow")  # type: ignore[arg-type]
    await settle(hub)
    slow.gate = asyncio.Event()  # its next send blocks (socket full)
    slow.protocol._paused = True  # and the transport reports flow control
    for cpu in range(1, 6):
        hub.on_telemetry(state("w1", float(cpu)), TelemetryEvent.UPDATE)
        await settle(hub)
    assert [m["w1"]["cpu_usage"] for m in fast.messages()[1:]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert slow.transport.chunks == []  # never written directly while paused
    slow.protocol._paused = False
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


async def test_compressed_and_closing_clients_take_the_writer_path() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    compressed, closing = FakeWebSocket(compress=15), FakeWebSocket()
    a = hub.connect(compressed, None, "z")  # type: ignore[arg-type]
    b = hub.connect(closing, None, "x")  # type: ignore[arg-type]
    await settle(hub)
    closing.transport.closing = True
    hub.on_telemetry(state("w1", 1.0), TelemetryEvent.UPDATE)
    await settle(hub)
    assert compressed.transport.chunks == [] and len(compressed.sent) == 2
    assert closing.transport.chunks == []
    assert hub.stats.direct_sends == 0
    await hub.disconnect(a)
    await hub.disconnect(b)


async def test_per_worker_clients_get_only_their_worker() -> None:
    hub = TelemetryHub(batch_interval=0.0)
    ws = FakeWebSocket()
    client = hub.connect(ws, "w2", "one")  # type: ignore[arg-type]
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
    clients = [hub.connect(ws, None, f"c{i}") for i, ws in enumerate(sockets)]  # type: ignore[arg-type]
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
