"""A master that speaks only the RPCs of PROTOCOL.md, like the existing Go master.

It has no ``StreamHeartbeats``: the generated servicer answers that RPC with
``UNIMPLEMENTED``, which is what a worker sees from a master built before the extension.
Run as ``python -m tests.legacy_master``; it prints one JSON line per event on stdout,
the first one ``{"listening": "127.0.0.1:PORT"}``.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import orjson

from cloudai.proto import pb, rpc


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


class LegacyMaster(rpc.MasterWorkerServicer):
    def __init__(self) -> None:
        self.registered: set[str] = set()

    async def RegisterWorker(self, request: pb.WorkerInfo, context: object) -> pb.RegisterAck:
        self.registered.add(request.worker_id)
        emit({"register": request.worker_id, "worker_ip": request.worker_ip})
        return pb.RegisterAck(success=True, message="registered")

    async def SendHeartbeat(
        self, request: pb.Heartbeat, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        if request.worker_id not in self.registered:
            await context.abort(grpc.StatusCode.NOT_FOUND, "call RegisterWorker first")
        emit({"heartbeat": request.worker_id, "cpu_usage": request.cpu_usage})
        return pb.HeartbeatAck(success=True)

    async def ReportTaskCompletion(self, request: pb.TaskResult, context: object) -> pb.Ack:
        emit({"result": request.task_id, "worker": request.worker_id})
        return pb.Ack(success=True)


async def main() -> None:
    server = grpc.aio.server()
    rpc.add_MasterWorkerServicer_to_server(LegacyMaster(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit({"listening": f"127.0.0.1:{port}"})
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
