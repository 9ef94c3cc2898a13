"""A worker that speaks only the plaintext protocol, as the existing Go worker does.

It takes no options but its id; serves gRPC on a free loopback port; learns its master
only from MasterRegister; then calls RegisterWorker with an EMPTY ``worker_ip`` (the
master must keep the address the admin registered) and sends a Heartbeat every
``HEARTBEAT_INTERVAL`` s over unary calls. Before MasterRegister it answers AssignTask
with "Master not registered yet". An assigned task "runs" at once: it reports success
with the command echoed as its logs.

Run as ``python -m tests.go_like_worker ID``; it prints one JSON line per event, the first
``{"listening": "127.0.0.1:PORT"}``. With ``GO_LIKE_DROP_TASKS`` set it accepts tasks and
drops them (as the Go worker does with a task it cannot run). A second MasterRegister (a
master announcing itself again, e.g. after a restart) replaces the heartbeat loop; a
master that does not call it back is never found again (heartbeats keep failing with
NOT_FOUND).
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import orjson

from cloudai.proto import pb, rpc

HEARTBEAT_INTERVAL = 0.3


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


class GoLikeWorker(rpc.MasterWorkerServicer):
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.master: str | None = None
        self.stub: rpc.MasterWorkerStub | None = None
        self.loop_task: asyncio.Task[None] | None = None

    async def MasterRegister(self, request: pb.MasterInfo, context: object) -> pb.RegisterAck:
        self.master = request.master_address
        emit({"master": self.master})
        if self.loop_task is not None:  # announced again: one heartbeat loop, the new one
            self.loop_task.cancel()
        channel = grpc.aio.insecure_channel(self.master)
        self.stub = rpc.MasterWorkerStub(channel)
        self.loop_task = asyncio.get_running_loop().create_task(self.run())
        return pb.RegisterAck(success=True, message="ok")

    async def AssignTask(self, request: pb.Task, context: object) -> pb.TaskAck:
        if self.stub is None:
            return pb.TaskAck(success=False, message="Master not registered yet")
        emit({"task": request.task_id})
        if os.environ.get("GO_LIKE_DROP_TASKS"):  # accept it, then drop it (never runs)
            return pb.TaskAck(success=True, message="accepted")
        asyncio.get_running_loop().create_task(self.finish(request))
        return pb.TaskAck(success=True, message="accepted")

    async def finish(self, task: pb.Task) -> None:
        assert self.stub is not None
        result = pb.TaskResult(
            task_id=task.task_id, worker_id=self.worker_id, status="success", logs=task.command
        )
        ack = await self.stub.ReportTaskCompletion(result)
        emit({"result": task.task_id, "acked": ack.success})

    async def run(self) -> None:
        assert self.stub is not None
        info = pb.WorkerInfo(worker_id=self.worker_id, worker_ip="", total_cpu=2, total_memory=4)
        ack = await self.stub.RegisterWorker(info)
        emit({"registered": ack.success, "message": ack.message})
        while True:
            hb = pb.Heartbeat(worker_id=self.worker_id, cpu_usage=12.5, memory_usage=40.0)
            try:
                await self.stub.SendHeartbeat(hb)
            except grpc.aio.AioRpcError as exc:
                emit({"heartbeat_error": exc.code().name})
            await asyncio.sleep(HEARTBEAT_INTERVAL)


async def main(worker_id: str) -> None:
    server = grpc.aio.server()
    rpc.add_MasterWorkerServicer_to_server(GoLikeWorker(worker_id), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit({"listening": f"127.0.0.1:{port}"})
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
