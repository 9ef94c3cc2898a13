"""The hub's fan-out against real sockets: the master's aiohttp app with the real
TelemetryHub, in this process on an ephemeral loopback port, and real aiohttp WebSocket
clients. A client that keeps up gets each tick's frame written straight to its transport
(the hub's own frame header, parsed by aiohttp's client; compressed by the hub for a
client that negotiated permessage-deflate); a client that falls behind goes through its
writer task and still ends with every worker's latest
state. Each scenario runs on asyncio's event loop and on uvloop's (the master's): the
hub writes to and queries either one's transports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.ws_hub import HubClient, TelemetryHub
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry

WAIT = 20.0  # seconds any one condition may take before the test fails

Scenario = Coroutine[Any, Any, None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario to the end on a fresh event loop of the parameter's kind."""
    if request.param == "uvloop":
        factory: Callable[[], asyncio.AbstractEventLoop] = pytest.importorskip(
            "uvloop"
        ).new_event_loop
    else:
        factory = asyncio.new_event_loop

    def run(scenario: Scenario) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario, 3 * WAIT))

    return run


class RecordingHub(TelemetryHub):
    """The real hub; remembers its clients so the test can look at their state."""

    def __init__(self) -> None:
        super().__init__(batch_interval=0.0)  # the test ends each tick with flush()
        self.joined: list[HubClient] = []

    def connect(self, *args: Any, **kwargs: Any) -> HubClient:
        client = super().connect(*args, **kwargs)
        self.joined.append(client)
        return client


@asynccontextmanager
async def serving(hub: TelemetryHub, *, compression: bool = False) -> AsyncIterator[str]:
    """The master's HTTP app on 127.0.0.1, an ephemeral port; yields its base URL."""
    app = create_app(TelemetryManager(), hub, WebSocketConfig(compression=compression))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"ws://{host}:{port}"
    finally:
        await runner.cleanup()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (fail after WAIT seconds)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.001)


async def joined(hub: RecordingHub, count: int) -> HubClient:
    """The ``count``-th client to connect, once it has."""
    await wait_for(lambda: len(hub.joined) >= count, f"client {count} connected")
    return hub.joined[count - 1]


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    decoded: dict[str, Any] = orjson.loads(msg.data)
    return decoded


def state(worker_id: str, value: float, tasks: int = 0) -> WorkerTelemetry:
    running = [TaskTelemetry(f"{worker_id}-task-{i}", cpu_usage=value) for i in range(tasks)]
    return WorkerTelemetry(worker_id, cpu_usage=value, running_tasks=running, is_active=True)


def publish(hub: TelemetryHub, states: list[WorkerTelemetry]) -> None:
    """One tick: these updates, then the frame goes out."""
    for s in states:
        hub.on_telemetry(s, TelemetryEvent.UPDATE)
    hub.flush()


class Reader:
    """Reads a client's frames in the background, merging them into the latest state."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.latest: dict[str, float] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            self.frames.append(frame)
            for worker_id, worker in frame.items():
                # A worker's states arrive in order: never an older one after a newer one.
                assert worker["cpu_usage"] >= self.latest.get(worker_id, -1.0), worker_id
                self.latest[worker_id] = worker["cpu_usage"]

    def has(self, expected: dict[str, float]) -> Callable[[], bool]:
        return lambda: self.latest == expected

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket with a small receive buffer: one that stops reading backs up fast."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    return sock


def test_a_client_that_keeps_up_gets_direct_writes_intact_and_in_order(
    run: Callable[[Scenario], None],
) -> None:
    run(keeps_up())


async def keeps_up() -> None:
    hub = RecordingHub()
    async with serving(hub) as url, aiohttp.ClientSession() as http:
        publish(hub, [state("w0", 0.0)])
        ws = await http.ws_connect(f"{url}/ws/telemetry")
        client = await joined(hub, 1)
        assert await receive(ws) == {"w0": state("w0", 0.0).to_json()}  # the snapshot
        await wait_for(lambda: not client.sending, "the snapshot's send done")
        # One worker per tick, each frame read before the next: all direct writes.
        for i in range(1, 101):
            publish(hub, [state("w0", float(i))])
            assert await receive(ws) == {"w0": state("w0", float(i)).to_json()}
        assert client.direct_sends == 100 and hub.stats.direct_sends == 100
        # Frames of every header length (7-bit, 16-bit, 64-bit payload lengths) arrive whole.
        for count, tasks in ((1, 0), (20, 2), (400, 6)):
            states = [state(f"w{n}", 1000.0 + count, tasks) for n in range(count)]
            before = client.direct_sends
            publish(hub, states)
            assert await receive(ws) == {s.worker_id: s.to_json() for s in states}
            assert client.direct_sends == before + 1
        assert len(orjson.dumps([s.to_json() for s in states])) > 65_535
        # A burst of ticks in one loop iteration: in order, ending with the latest state
        # (should the transport hold some back, the rest goes through the writer and may
        # be coalesced, never reordered).
        for i in range(2000, 2200):
            publish(hub, [state("w0", float(i))])
        got = [(await receive(ws))["w0"]["cpu_usage"]]
        while got[-1] < 2199.0:
            got.append((await receive(ws))["w0"]["cpu_usage"])
        assert got == sorted(set(got)) and got[0] == 2000.0
        assert client.direct_sends > 104
        assert hub.stats.send_errors == 0
        await ws.close()


def test_a_client_that_stops_reading_is_served_by_its_writer_and_catches_up(
    run: Callable[[Scenario], None],
) -> None:
    run(stops_reading())


async def stops_reading(deflate: int = 0) -> None:
    """``deflate``: both clients negotiate permessage-deflate (the writer path then
    compresses each frame itself and waits on the connection's drain; slow to back up,
    so the unit tests cover that path with fakes)."""
    hub = RecordingHub()
    workers = [f"w{n:03d}" for n in range(300)]
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with (
        serving(hub, compression=bool(deflate)) as url,
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(connector=connector) as slow_http,
    ):
        fast_ws = await http.ws_connect(f"{url}/ws/telemetry", compress=deflate)
        fast = await joined(hub, 1)
        slow_ws = await slow_http.ws_connect(f"{url}/ws/telemetry", compress=deflate)
        slow = await joined(hub, 2)  # and never reads
        assert slow.deflate == fast.deflate == deflate
        reader = Reader(fast_ws)
        await wait_for(lambda: len(reader.frames) == 1, "the fast client's snapshot")
        await wait_for(lambda: not fast.sending and not slow.sending, "the snapshots' sends")

        # ~40 KB frames until the slow client's socket backs up (its transport holds
        # what the kernel would not take); the reading client paces the ticks.
        tick = 0

        def backed_up() -> bool:
            assert slow.transport is not None
            return slow.sending or slow.transport.get_write_buffer_size() > 0

        while not backed_up():
            tick += 1
            assert tick < 2000, "the slow client's socket never backed up"
            publish(hub, [state(w, float(tick), 1) for w in workers])
            await wait_for(reader.has(dict.fromkeys(workers, float(tick))), f"tick {tick}")
        direct_before, fast_direct_before = slow.direct_sends, fast.direct_sends

        # Behind: 50 more ticks reach it only through its buffer and writer task.
        for _ in range(50):
            tick += 1
            publish(hub, [state(w, float(tick), 1) for w in workers])
            await wait_for(reader.has(dict.fromkeys(workers, float(tick))), f"tick {tick}")
            assert slow.direct_sends == direct_before  # never a direct write while behind
        assert fast.direct_sends > fast_direct_before  # the reading client: still direct
        assert slow.buffer.coalesced > 0  # what piled up was coalesced, per worker

        # It reads again: it ends with every worker's latest state, frames intact.
        slow_reader = Reader(slow_ws)
        await wait_for(slow_reader.has(dict.fromkeys(workers, float(tick))), "caught up")
        assert len(slow_reader.frames) < tick  # fewer frames than ticks: coalesced
        assert hub.stats.send_errors == 0
        for r in (reader, slow_reader):
            await r.stop()
        await fast_ws.close()
        await slow_ws.close()


def test_a_compressed_client_gets_frames_the_hub_compressed(
    run: Callable[[Scenario], None],
) -> None:
    run(compressed())


async def compressed() -> None:
    """permessage-deflate: the hub compresses each frame on its own (no context takeover)
    and writes it directly; aiohttp's client inflates every one of them."""
    hub = RecordingHub()
    workers = [f"w{n}" for n in range(50)]
    async with serving(hub, compression=True) as url, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{url}/ws/telemetry", compress=15)
        client = await joined(hub, 1)
        assert ws.compress == 15 and client.transport is not None and client.deflate == 15
        reader = Reader(ws)
        for tick in range(1, 101):
            publish(hub, [state(w, float(tick)) for w in workers[tick % 5 :: 5]])
        # Worker n last changed at the last tick t <= 100 with t % 5 == n % 5.
        expected = {w: float(100 - (100 - n) % 5) for n, w in enumerate(workers)}
        await wait_for(reader.has(expected), "every worker's latest state")
        # A frame is counted sent once its write drained: wait for the last one.
        await wait_for(
            lambda: hub.stats.compressed_sends == client.frames_sent, "the last frame sent"
        )
        assert client.direct_sends > 0
        assert hub.stats.compressed_sends == client.frames_sent == len(reader.frames)
        # Compressed on the wire: fewer bytes than the JSON the client read.
        assert hub.stats.bytes_sent < sum(len(orjson.dumps(f)) for f in reader.frames)
        await reader.stop()
        await ws.close()
