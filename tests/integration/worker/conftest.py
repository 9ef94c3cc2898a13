"""Fixtures for the worker's tests against fake masters: real gRPC servers on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from cloudai.proto import pb, rpc

# -- a fake master -----------------------------------------------------------------------------

_METHODS: dict[str, tuple[str, Any, Any]] = {
    "RegisterWorker": ("unary", pb.WorkerInfo, pb.RegisterAck),
    "SendHeartbeat": ("unary", pb.Heartbeat, pb.HeartbeatAck),
    "ReportTaskCompletion": ("unary", pb.TaskResult, pb.Ack),
    "StreamHeartbeats": ("stream", pb.Heartbeat, pb.HeartbeatAck),
}


class FakeMaster(rpc.MasterWorkerServicer):
    """Records the worker -> master calls. ``stream=False`` serves no StreamHeartbeats at
    all (like the existing Go master); ``forget()`` drops sessions (a restarted master)."""

    def __init__(self, stream: bool = True, authorised: bool = True) -> None:
        self.stream = stream
        self.authorised = authorised
        self.registrations: list[pb.WorkerInfo] = []
        self.refusals = 0
        self.heartbeats: list[pb.Heartbeat] = []
        self.unary_heartbeats = 0
        self.stream_heartbeats = 0
        self.streams_opened = 0
        self.streams_ended_cleanly = 0
        self.not_found = 0
        self.results: list[pb.TaskResult] = []
        self.result_ack = True
        self.sessions: set[str] = set()
        self.address = ""

    def forget(self) -> None:
        self.sessions.clear()

    def running(self, task_id: str) -> pb.RunningTask | None:
        for heartbeat in reversed(self.heartbeats[-3:]):
            for task in heartbeat.running_tasks:
                if task.task_id == task_id:
                    return task
        return None

    def result(self, task_id: str) -> pb.TaskResult | None:
        return next((r for r in self.results if r.task_id == task_id), None)

    async def RegisterWorker(self, request: pb.WorkerInfo, context: Any) -> pb.RegisterAck:
        if not self.authorised:
            self.refusals += 1
            return pb.RegisterAck(
                success=False,
                message=f"worker {request.worker_id!r} is not authorised on this master; an"
                f" admin must run: register {request.worker_id} {request.worker_ip}",
            )
        self.registrations.append(request)
        self.sessions.add(request.worker_id)
        return pb.RegisterAck(success=True, message="registered")

    async def _accept(self, heartbeat: pb.Heartbeat, context: Any) -> None:
        if heartbeat.worker_id not in self.sessions:
            self.not_found += 1
            await context.abort(grpc.StatusCode.NOT_FOUND, "call RegisterWorker first")
        self.heartbeats.append(heartbeat)

    async def SendHeartbeat(self, request: pb.Heartbeat, context: Any) -> pb.HeartbeatAck:
        await self._accept(request, context)
        self.unary_heartbeats += 1
        return pb.HeartbeatAck(success=True)

    async def StreamHeartbeats(self, request_iterator: Any, context: Any) -> pb.HeartbeatAck:
        self.streams_opened += 1
        async for heartbeat in request_iterator:
            await self._accept(heartbeat, context)
            self.stream_heartbeats += 1
        self.streams_ended_cleanly += 1
        return pb.HeartbeatAck(success=True)

    async def ReportTaskCompletion(self, request: pb.TaskResult, context: Any) -> pb.Ack:
        if self.result_ack:
            self.results.append(request)
        return pb.Ack(success=self.result_ack, message="recorded" if self.result_ack else "no")

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for name, (kind, request, response) in _METHODS.items():
            if name == "StreamHeartbeats" and not self.stream:
                continue
            make = (
                grpc.unary_unary_rpc_method_handler
                if kind == "unary"
                else grpc.stream_unary_rpc_method_handler
            )
            handlers[name] = make(
                getattr(self, name),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler("cluster.MasterWorker", handlers)


class MasterServers:
    """Starts fake masters on loopback (optionally on a given port) and stops them all."""

    def __init__(self) -> None:
        self.servers: list[grpc.aio.Server] = []

    async def start(self, master: FakeMaster, port: int = 0) -> str:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((master.handler(),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.servers.append(server)
        master.address = f"127.0.0.1:{bound}"
        master.server = server  # type: ignore[attr-defined]
        return master.address

    async def stop(self, master: FakeMaster) -> None:
        server = master.server  # type: ignore[attr-defined]
        await server.stop(None)

    async def close(self) -> None:
        await asyncio.gather(*(s.stop(None) for s in self.servers))


@pytest.fixture
async def masters() -> Any:
    servers = MasterServers()
    yield servers
    await servers.close()


@pytest.fixture
def fake_master_class() -> type[FakeMaster]:
    return FakeMaster


@pytest.fixture
def free_port() -> int:
    """A loopback port with nothing listening (for a master that is down)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
