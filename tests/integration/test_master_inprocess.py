"""MasterServer in this process: nothing (task, socket, thread) outlives stop(); a stage
that cannot start stops the ones before it."""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
import grpc
import pytest

from cloudai.master.server import assemble
from cloudai.master.settings import MasterSettings
from cloudai.proto import pb, rpc
from cloudai.store import StoreError


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_stop_leaves_nothing_behind(tmp_path) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    tasks_before = asyncio.all_tasks()
    settings = MasterSettings(
        grpc_host="127.0.0.1",
        grpc_port=0,
        http_host="127.0.0.1",
        http_port=0,
        allowed_workers={"w1": "127.0.0.1:9", "w2": "127.0.0.1:9"},
        data_dir=tmp_path,
        insecure=True,  # plaintext channels below; the secure master: tests/.../security
    )
    server = await assemble(settings)
    await server.start()
    grpc_port, http_port = server.grpc_port, server.http_port
    assert grpc_port and http_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = rpc.MasterWorkerStub(channel)
        for worker_id in ("w1", "w2"):
            ack = await stub.RegisterWorker(pb.WorkerInfo(worker_id=worker_id))
            assert ack.success
            await stub.SendHeartbeat(pb.Heartbeat(worker_id=worker_id, cpu_usage=5))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{http_port}/ws/telemetry")
        await ws.receive()
        assert server.parts.hub.client_count == 1
        closing = asyncio.create_task(ws.receive())  # a dashboard reads all the time
        await server.stop()
        msg = await asyncio.wait_for(closing, 5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1001
        await ws.close()
    assert server.parts.hub.client_count == 0
    leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    assert not leftover, leftover
    assert can_bind(grpc_port) and can_bind(http_port)
    # The loop's default executor (store calls run there) is joined when the loop ends,
    # as asyncio.run() does; grpc's core keeps a small pool of daemon threads.
    await asyncio.get_running_loop().shutdown_default_executor()
    ours = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and not t.daemon and t.name != "MainThread"
    ]
    assert ours == []


async def test_a_failed_stage_stops_the_started_ones(tmp_path) -> None:
    """The HTTP port is taken: start() fails with OSError, and the store, the telemetry
    tasks and the gRPC server it had started are stopped again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        tasks_before = asyncio.all_tasks()
        settings = MasterSettings(
            grpc_host="127.0.0.1",
            grpc_port=0,
            http_host="127.0.0.1",
            http_port=busy,
            data_dir=tmp_path,
        )
        server = await assemble(settings)
        try:
            await server.start()
        except OSError:
            pass
        else:
            await server.stop()
            raise AssertionError("the master started on a busy port")
        grpc_port = server.grpc_port
        assert grpc_port and can_bind(grpc_port)
        assert server.persistence is not None
        with pytest.raises(StoreError, match="closed"):
            server.persistence.store.list_workers()
        leftover = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
        assert not leftover, leftover
