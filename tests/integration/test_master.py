"""A real master process on ephemeral loopback ports, driven like a worker/dashboard would."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import orjson
import psutil
import pytest

from cloudai.proto import pb, rpc
from tests.harness import Process, async_wait_until, start_master

CONTRACT_KEYS = [
    "worker_id",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "running_tasks",
    "last_update",
    "is_active",
]


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(
        tmp_path,
        "--allow-worker",
        "w1=127.0.0.1:9",
        "--allow-worker",
        "w2=127.0.0.1:9",
        "--inactivity-timeout",
        "1",
    )
    yield process
    process.kill()


@pytest.fixture
async def stub(master: Process) -> AsyncIterator[rpc.MasterWorkerStub]:
    async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
        yield rpc.MasterWorkerStub(channel)


async def register(stub: rpc.MasterWorkerStub, worker_id: str) -> pb.RegisterAck:
    return await stub.RegisterWorker(
        pb.WorkerInfo(worker_id=worker_id, worker_ip="127.0.0.1:9", total_cpu=4, total_memory=8)
    )


def heartbeat(worker_id: str, cpu: float, tasks: int = 1) -> pb.Heartbeat:
    return pb.Heartbeat(
        worker_id=worker_id,
        cpu_usage=cpu,
        memory_usage=40.1,
        storage_usage=10.0,
        gpu_usage=0.0,
        running_tasks=[
            pb.RunningTask(
                task_id=f"t{i}", cpu_allocated=1.0, memory_allocated=0.5, status="running"
            )
            for i in range(tasks)
        ],
    )


async def health(master: Process) -> dict:
    async with aiohttp.ClientSession() as http, http.get(master.extra["http"] + "/health") as r:
        assert r.status == 200
        return await r.json()


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict:
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def receive_until(ws: aiohttp.ClientWebSocketResponse, predicate) -> dict:
    while True:
        message = await next_json(ws)
        if predicate(message):
            return message


async def test_register_heartbeat_and_stream(master: Process, stub: rpc.MasterWorkerStub) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws:
            assert await next_json(ws) == {}  # snapshot: no workers yet
            ack = await register(stub, "w1")
            assert ack.success, ack.message
            await stub.SendHeartbeat(heartbeat("w1", 12.5))
            update = await receive_until(ws, lambda m: m.get("w1", {}).get("cpu_usage") == 12.5)
            worker = update["w1"]
            assert list(worker)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
            assert worker["worker_id"] == "w1" and worker["is_active"] is True
            assert isinstance(worker["last_update"], int)
            assert worker["running_tasks"][0] == {
                "task_id": "t0",
                "cpu_allocated": 1.0,
                "memory_allocated": 0.5,
                "gpu_allocated": 0.0,
                "status": "running",
                "cpu_usage": 0.0,
                "memory_used_bytes": 0,
            }
        # A new client gets the snapshot first.
        async with http.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws:
            snapshot = await next_json(ws)
            assert snapshot["w1"]["cpu_usage"] == 12.5
        # Per-worker stream: an unknown worker first gives {}, then its updates.
        async with http.ws_connect(master.extra["ws"] + "/ws/telemetry/w2") as ws:
            assert await next_json(ws) == {}
            assert (await register(stub, "w2")).success
            await stub.SendHeartbeat(heartbeat("w1", 50.0))
            await stub.SendHeartbeat(heartbeat("w2", 77.0))
            message = await receive_until(ws, lambda m: m.get("w2", {}).get("cpu_usage") == 77.0)
            assert set(message) == {"w2"}


async def test_health_counts_workers_and_clients(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    assert (await health(master))["workers"] == 0
    await register(stub, "w1")
    await stub.SendHeartbeat(heartbeat("w1", 1.0))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry"),
    ):
        body = await async_wait_until(
            lambda: _health_matches(master, workers=1, active_workers=1, active_clients=1)
        )
        assert body["status"] == "healthy" and isinstance(body["time"], int)
    # w1 goes inactive after the 1 s timeout (checked every 0.5 s).
    await async_wait_until(lambda: _health_matches(master, workers=1, active_workers=0))


async def _health_matches(master: Process, **expected: int) -> dict | None:
    body = await health(master)
    return body if all(body[k] == v for k, v in expected.items()) else None


async def test_unknown_worker_is_refused(master: Process, stub: rpc.MasterWorkerStub) -> None:
    ack = await stub.RegisterWorker(pb.WorkerInfo(worker_id="stranger", worker_ip="10.1.2.3:50052"))
    assert not ack.success
    assert "register stranger 10.1.2.3:50052" in ack.message
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendHeartbeat(heartbeat("stranger", 1.0))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "RegisterWorker" in err.value.details()
    # Authorised but not yet registered: refused the same way.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendHeartbeat(heartbeat("w1", 1.0))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "bad",
    [
        pb.Heartbeat(worker_id="w1", cpu_usage=float("nan")),
        pb.Heartbeat(worker_id="w1", memory_usage=101),
        pb.Heartbeat(worker_id="w1", gpu_usage=-1),
        pb.Heartbeat(worker_id=""),
        pb.Heartbeat(worker_id="x" * 200),
        pb.Heartbeat(
            worker_id="w1", running_tasks=[pb.RunningTask(task_id="a"), pb.RunningTask(task_id="a")]
        ),
        pb.Heartbeat(
            worker_id="w1", running_tasks=[pb.RunningTask(task_id=f"{i}") for i in range(1025)]
        ),
    ],
)
async def test_bad_heartbeats_are_invalid_argument(
    master: Process, stub: rpc.MasterWorkerStub, bad: pb.Heartbeat
) -> None:
    await register(stub, "w1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendHeartbeat(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await stub.SendHeartbeat(heartbeat("w1", 3.0))  # state not poisoned


async def test_oversized_message_is_refused(master: Process, stub: rpc.MasterWorkerStub) -> None:
    await register(stub, "w1")
    huge = pb.Heartbeat(
        worker_id="w1", running_tasks=[pb.RunningTask(task_id="t", status="x" * (5 << 20))]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SendHeartbeat(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await stub.SendHeartbeat(heartbeat("w1", 3.0))


def _stalled_ws_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /ws/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return sock


async def test_slow_client_blocks_nobody_and_memory_stays_bounded(
    master: Process, stub: rpc.MasterWorkerStub
) -> None:
    await register(stub, "w1")
    await register(stub, "w2")
    stalled = [_stalled_ws_client(master.ready["http_port"]) for _ in range(3)]
    try:
        proc = psutil.Process(master.pid)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(master.extra["ws"] + "/ws/telemetry") as fast,
        ):
            await next_json(fast)
            # Warm up, then measure RSS growth over many updates of large frames.
            for i in range(200):
                await stub.SendHeartbeat(heartbeat("w1", i % 100, tasks=200))
            await receive_until(fast, lambda m: m.get("w1", {}).get("cpu_usage") == 99)
            rss_before = proc.memory_info().rss
            last = 0.0
            for i in range(3000):
                last = float(i % 97)
                await stub.SendHeartbeat(heartbeat("w1", last, tasks=200))
                await stub.SendHeartbeat(heartbeat("w2", last, tasks=200))
            # The fast client still gets the latest state of both workers.
            seen: dict[str, float] = {}

            def done(message: dict) -> bool:
                for worker_id, state in message.items():
                    seen[worker_id] = state["cpu_usage"]
                return seen.get("w1") == last and seen.get("w2") == last

            await receive_until(fast, done)
            growth = proc.memory_info().rss - rss_before
            # 6,000 updates of ~20 KB would be ~120 MB per stalled client if buffered.
            assert growth < 20 * 1024 * 1024, f"master RSS grew by {growth / 1e6:.1f} MB"
            body = await health(master)
            assert body["active_clients"] == 4
    finally:
        for sock in stalled:
            sock.close()


async def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    master = start_master(tmp_path, "--allow-worker", "w1=127.0.0.1:9")
    try:
        async with grpc.aio.insecure_channel(master.extra["grpc"]) as channel:
            stub = rpc.MasterWorkerStub(channel)
            assert (await register(stub, "w1")).success
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws,
            ):
                await next_json(ws)
                master.send_signal(signal.SIGTERM)
                msg = await asyncio.wait_for(ws.receive(), 10)
                while msg.type == aiohttp.WSMsgType.TEXT:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1001
        assert await asyncio.to_thread(master.proc.wait, 10) == 0
        assert "stopped" in master.log()
    finally:
        master.kill()


async def test_silent_client_is_pinged_then_dropped(tmp_path: Path) -> None:
    master = start_master(tmp_path, "--ws-ping-interval", "0.3", "--ws-client-timeout", "1")
    silent = _stalled_ws_client(master.ready["http_port"])  # never answers pings
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(master.extra["ws"] + "/ws/telemetry", autoping=True) as polite,
        ):
            await next_json(polite)
            reader = asyncio.create_task(polite.receive())  # reading answers pings
            await async_wait_until(lambda: _health_matches(master, active_clients=2), 5)
            # The silent client is dropped after the timeout; the polite one stays.
            await async_wait_until(lambda: _health_matches(master, active_clients=1), 10)
            await asyncio.sleep(1.5)  # past another timeout: still connected
            assert not reader.done() and not polite.closed
            reader.cancel()
    finally:
        silent.close()
        master.kill()
