"""A stand-in worker process for tests of the master's admin surfaces.

It speaks the real protocol: serves MasterRegister/AssignTask/CancelTask on a loopback
port, calls the master's RegisterWorker and sends heartbeats (fixed usage figures),
reports task results. A task "runs" for ``--task-seconds`` and reports its command as
its logs; a command starting with ``sleep`` runs until cancelled.

    python tests/fake_worker.py --id w1 [--master HOST:PORT] --ready-file F

``start_fake_worker`` (below) starts one and waits for its ready file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from cloudai.proto import pb, rpc


class FakeWorker(rpc.MasterWorkerServicer):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = 0
        self.master: str | None = None
        self.running: dict[str, pb.Task] = {}
        self._finishers: dict[str, asyncio.Task[None]] = {}
        self._heartbeats: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    # -- towards the master -----------------------------------------------------------------

    async def join(self, master: str) -> None:
        if self._channel is not None:
            await self._channel.close()
        self.master = master
        self._channel = grpc.aio.insecure_channel(master)
        stub = rpc.MasterWorkerStub(self._channel)
        ack = await stub.RegisterWorker(
            pb.WorkerInfo(
                worker_id=self.args.id,
                worker_ip=f"127.0.0.1:{self.port}",
                total_cpu=8,
                total_memory=16,
                total_storage=100,
                total_gpu=1,
            ),
            timeout=5,
        )
        print(f"RegisterWorker: {ack.success} {ack.message}", flush=True)
        if self._heartbeats is None:
            self._heartbeats = asyncio.get_running_loop().create_task(self._beat())

    def _stub(self) -> rpc.MasterWorkerStub:
        assert self._channel is not None
        return rpc.MasterWorkerStub(self._channel)

    async def _beat(self) -> None:
        while True:
            tasks = [
                pb.RunningTask(task_id=t.task_id, cpu_allocated=t.req_cpu, status="running")
                for t in self.running.values()
            ]
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub().SendHeartbeat(
                    pb.Heartbeat(
                        worker_id=self.args.id,
                        cpu_usage=self.args.cpu,
                        memory_usage=self.args.mem,
                        storage_usage=20.0,
                        gpu_usage=self.args.gpu,
                        running_tasks=tasks,
                    ),
                    timeout=5,
                )
            await asyncio.sleep(self.args.interval)

    async def _report(self, task: pb.Task, status: str, logs: str, exit_code: int) -> None:
        self.running.pop(task.task_id, None)
        await self._stub().ReportTaskCompletion(
            pb.TaskResult(
                task_id=task.task_id,
                worker_id=self.args.id,
                status=status,
                logs=logs,
                exit_code=exit_code,
            ),
            timeout=5,
        )

    async def _finish_later(self, task: pb.Task) -> None:
        await asyncio.sleep(self.args.task_seconds)
        await self._report(task, "success", f"fake output of: {task.command}\n", 0)

    # -- RPCs the master calls ----------------------------------------------------------------

    async def MasterRegister(self, request: pb.MasterInfo, context: object) -> pb.RegisterAck:
        asyncio.get_running_loop().create_task(self.join(request.master_address))
        return pb.RegisterAck(success=True, message=f"{self.args.id} joining {request.master_id}")

    async def AssignTask(self, request: pb.Task, context: object) -> pb.TaskAck:
        self.running[request.task_id] = request
        if not request.command.startswith("sleep"):
            self._finishers[request.task_id] = asyncio.get_running_loop().create_task(
                self._finish_later(request)
            )
        return pb.TaskAck(success=True, message="accepted")

    async def CancelTask(self, request: pb.TaskID, context: object) -> pb.TaskAck:
        task = self.running.get(request.task_id)
        if task is None:
            return pb.TaskAck(success=False, message=f"task {request.task_id} is not running")
        finisher = self._finishers.pop(request.task_id, None)
        if finisher is not None:
            finisher.cancel()
        asyncio.get_running_loop().create_task(self._report(task, "cancelled", "cancelled\n", -15))
        return pb.TaskAck(success=True, message="cancelling")


async def serve(args: argparse.Namespace) -> None:
    worker = FakeWorker(args)
    server = grpc.aio.server()
    rpc.add_MasterWorkerServicer_to_server(worker, server)
    worker.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if args.master:
        await worker.join(args.master)
    ready = Path(args.ready_file)
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": worker.port}))
    tmp.replace(ready)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--master")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--cpu", type=float, default=42.0)
    parser.add_argument("--mem", type=float, default=33.0)
    parser.add_argument("--gpu", type=float, default=7.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--task-seconds", type=float, default=0.3)
    asyncio.run(serve(parser.parse_args()))


# -- for tests ---------------------------------------------------------------------------------


@dataclass
class FakeWorkerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_fake_worker(
    workdir: Path, worker_id: str, *extra: str, timeout: float = 20.0
) -> FakeWorkerProcess:
    from tests.harness import child_env, wait_until

    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"fake-{worker_id}.ready.json"
    ready.unlink(missing_ok=True)
    log_path = workdir / f"fake-{worker_id}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--id", worker_id, "--ready-file", str(ready), *extra],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )

    def is_ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fake worker exited: {log_path.read_text(errors='replace')}")
        return ready.exists()

    try:
        wait_until(is_ready, timeout, f"fake worker {worker_id}")
    except AssertionError:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return FakeWorkerProcess(proc, json.loads(ready.read_text())["port"], log_path)


if __name__ == "__main__":
    main()
