"""The worker end to end in-process: its gRPC service (MasterRegister, AssignTask,
CancelTask) on loopback, a fake master, real process tasks, graceful stop."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from cloudai.proto import pb, rpc
from cloudai.worker.node import WorkerNode, WorkerStartError
from cloudai.worker.service import MASTER_NOT_REGISTERED, master_address_from, peer_host
from cloudai.worker.settings import WorkerSettings

PY = sys.executable


class NoGpu:
    def count(self) -> int:
        return 0

    def utilisation(self) -> float:
        return 0.0


def settings(tmp_path: Path, **kwargs: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "worker_id": "w1",
        "insecure": True,  # the plaintext protocol; secure workers: tests/integration/security
        "host": "127.0.0.1",
        "port": 0,
        "work_dir": tmp_path / "work",
        "heartbeat_interval": 0.05,
        "backoff_initial": 0.02,
        "heartbeat_backoff_max": 0.2,
        "register_backoff_max": 0.2,
        "rpc_timeout": 2.0,
        "drain_timeout": 0.5,
        "kill_grace": 0.5,
        "flush_timeout": 2.0,
        "shutdown_grace": 0.5,
    }
    values.update(kwargs)
    return WorkerSettings(**values)


def no_docker() -> Any:
    raise FileNotFoundError("/var/run/docker.sock")


class Worker:
    """A started WorkerNode and a stub of its gRPC service."""

    def __init__(self, node: WorkerNode) -> None:
        self.node = node
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.port}")
        self.stub = rpc.MasterWorkerStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.node.stop()


@pytest.fixture
async def start_worker(tmp_path: Path, masters: Any) -> Any:
    # Depends on `masters` so that workers stop before the fake masters go away.
    started: list[Worker] = []

    async def start(**kwargs: Any) -> Worker:
        node = WorkerNode(
            settings(tmp_path, **kwargs), gpu=NoGpu(), docker_client_factory=no_docker
        )
        await node.start()
        worker = Worker(node)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.close()


async def test_assign_before_any_master_is_refused_like_the_go_worker(start_worker: Any) -> None:
    worker = await start_worker()
    ack = await worker.stub.AssignTask(pb.Task(task_id="t1", command="true"), timeout=5)
    assert (ack.success, ack.message) == (False, MASTER_NOT_REGISTERED)


async def test_flow_1_master_register_then_register_worker_and_heartbeats(
    start_worker: Any, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    worker = await start_worker()
    master = fake_master_class()
    address = await masters.start(master)
    ack = await worker.stub.MasterRegister(
        pb.MasterInfo(master_id="m1", master_address=address), timeout=5
    )
    assert ack.success
    await eventually(lambda: len(master.heartbeats) >= 2, what="heartbeats")
    (info,) = master.registrations
    assert info.worker_id == "w1"
    assert info.worker_ip == worker.node.address == f"127.0.0.1:{worker.node.port}"
    totals = worker.node.totals
    assert (info.total_cpu, info.total_memory, info.total_storage) == (
        totals.cpu_cores,
        totals.memory_gb,
        totals.storage_gb,
    )
    assert info.total_cpu == psutil.cpu_count() and info.total_memory > 0.1
    assert info.total_memory != 8.0 or info.total_storage != 100.0  # no Go placeholders
    heartbeat = master.heartbeats[-1]
    for value in (heartbeat.cpu_usage, heartbeat.memory_usage, heartbeat.storage_usage):
        assert 0.0 <= value <= 100.0
    assert heartbeat.memory_usage > 0.0


async def test_master_register_with_a_wildcard_uses_the_callers_address(
    start_worker: Any, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    worker = await start_worker()
    master = fake_master_class()
    port = (await masters.start(master)).rsplit(":", 1)[1]
    ack = await worker.stub.MasterRegister(pb.MasterInfo(master_address=f"0.0.0.0:{port}"))
    assert ack.success
    await eventually(lambda: master.registrations)
    assert worker.node.client.master_address == f"127.0.0.1:{port}"


async def test_master_register_with_an_invalid_address_is_refused(start_worker: Any) -> None:
    worker = await start_worker()
    ack = await worker.stub.MasterRegister(pb.MasterInfo(master_address="nonsense"))
    assert not ack.success and "invalid MasterInfo" in ack.message
    assert not worker.node.client.master_known


def test_master_address_helpers() -> None:
    assert peer_host("ipv4:10.0.0.5:4242") == "10.0.0.5"
    assert peer_host("ipv6:[::1]:4242") == "::1"
    assert peer_host("unix:/tmp/x") is None
    info = pb.MasterInfo(master_address="[::]:50051")
    assert master_address_from(info, "ipv6:[fe80::1]:9") == "[fe80::1]:50051"
    with pytest.raises(ValueError, match="empty"):
        master_address_from(pb.MasterInfo(), "ipv4:1.2.3.4:5")


async def test_worker_side_does_not_implement_master_rpcs(start_worker: Any) -> None:
    worker = await start_worker()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await worker.stub.RegisterWorker(pb.WorkerInfo(worker_id="x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_flow_2_task_runs_is_listed_and_its_result_is_delivered(
    start_worker: Any, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class(stream=False)
    worker = await start_worker(master_address=await masters.start(master))
    await eventually(lambda: master.heartbeats, what="heartbeats (flow 2)")
    command = f'{PY} -c \'print("hello"); import time; time.sleep(0.5); print("bye")\''
    ack = await worker.stub.AssignTask(
        pb.Task(task_id="t1", command=command, req_cpu=1, req_memory=0.5), timeout=5
    )
    assert ack.success, ack.message
    running = await eventually(lambda: master.running("t1"), what="t1 in running_tasks")
    assert (running.status, running.cpu_allocated, running.memory_allocated) == (
        "running",
        1.0,
        0.5,
    )
    result = await eventually(lambda: master.result("t1"), what="the result of t1")
    assert (result.status, result.exit_code, result.worker_id) == ("success", 0, "w1")
    assert result.logs == "hello\nbye\n[cloudai] exit code 0\n"
    await eventually(lambda: master.heartbeats[-1].running_tasks == [], what="t1 gone")
    await eventually(lambda: len(worker.node.spool) == 0)


async def test_duplicate_and_oversized_tasks_are_refused(
    start_worker: Any, masters: Any, fake_master_class: Any
) -> None:
    master = fake_master_class()
    worker = await start_worker(master_address=await masters.start(master))
    assert (await worker.stub.AssignTask(pb.Task(task_id="t1", command="sleep 30"))).success
    ack = await worker.stub.AssignTask(pb.Task(task_id="t1", command="sleep 30"))
    assert not ack.success and "already running" in ack.message
    ack = await worker.stub.AssignTask(pb.Task(task_id="big", command="true", req_cpu=10_000))
    assert not ack.success and "requests 10000 cores" in ack.message
    ack = await worker.stub.AssignTask(pb.Task(task_id="img", docker_image="alpine:3"))
    assert not ack.success and "no Docker engine is reachable" in ack.message
    ack = await worker.stub.AssignTask(pb.Task(task_id="empty"))
    assert not ack.success and "neither docker_image nor command" in ack.message


async def test_cancel_task_stops_the_tree_and_reports_cancelled(
    start_worker: Any, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class()
    worker = await start_worker(master_address=await masters.start(master))
    await eventually(lambda: worker.node.client.registered)
    ack = await worker.stub.AssignTask(pb.Task(task_id="long", command="sleep 60 & sleep 60"))
    assert ack.success
    await eventually(lambda: master.running("long"), what="the task listed")

    def tree() -> list[psutil.Process]:  # the handle is set once the process started
        handle = worker.node.tasks._entries["long"].handle
        return [] if handle is None else handle.tree()

    await eventually(lambda: len(tree()) >= 3, 20, "the task's shell and its two sleeps")
    pids = [p.pid for p in tree()]
    ack = await worker.stub.CancelTask(pb.TaskID(task_id="long"), timeout=5)
    assert ack.success, ack.message
    result = await eventually(lambda: master.result("long"), what="the cancelled result")
    assert result.status == "cancelled"
    assert "cancelled by the master" in result.logs
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    ack = await worker.stub.CancelTask(pb.TaskID(task_id="nope"), timeout=5)
    assert not ack.success and "not running" in ack.message


async def test_graceful_stop_cancels_after_the_drain_timeout_and_delivers(
    tmp_path: Path, masters: Any, fake_master_class: Any, eventually: Any
) -> None:
    master = fake_master_class()
    node = WorkerNode(
        settings(tmp_path, master_address=await masters.start(master), drain_timeout=0.3),
        gpu=NoGpu(),
        docker_client_factory=no_docker,
    )
    await node.start()
    await eventually(lambda: node.client.registered)
    assert (await node.tasks.assign(pb.Task(task_id="quick", command="sleep 0.1")))[0]
    assert (await node.tasks.assign(pb.Task(task_id="slow", command="sleep 60")))[0]
    await asyncio.wait_for(node.stop(), 15)
    statuses = {r.task_id: r.status for r in master.results}
    assert statuses == {"quick": "success", "slow": "cancelled"}
    assert master.streams_ended_cleanly == 1  # heartbeats stopped cleanly
    assert len(node.spool) == 0


async def test_results_wait_on_disk_across_a_worker_restart(
    tmp_path: Path, masters: Any, fake_master_class: Any, eventually: Any, free_port: int
) -> None:
    down = f"127.0.0.1:{free_port}"
    node = WorkerNode(settings(tmp_path, master_address=down), gpu=NoGpu())
    await node.start()
    assert (await node.tasks.assign(pb.Task(task_id="t1", command="echo done")))[0]
    await eventually(lambda: node.spool.contains("t1"))
    await node.stop()  # cannot deliver: the master is down
    assert (tmp_path / "work" / "results" / "t1.result").exists()

    master = fake_master_class()
    await masters.start(master, free_port)
    again = WorkerNode(settings(tmp_path, master_address=down), gpu=NoGpu())
    await again.start()
    try:
        result = await eventually(lambda: master.result("t1"), what="the result after restart")
        assert result.status == "success" and "done" in result.logs
        await eventually(lambda: len(again.spool) == 0)
    finally:
        await again.stop()


async def test_one_worker_per_work_directory(start_worker: Any, tmp_path: Path) -> None:
    await start_worker()
    other = WorkerNode(settings(tmp_path), gpu=NoGpu())
    with pytest.raises(WorkerStartError, match="in use by another worker"):
        await other.start()


async def test_first_free_port_and_ready_file(start_worker: Any, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        worker = await start_worker(port=taken, work_dir=tmp_path / "w")
    assert worker.node.port is not None and worker.node.port > taken
    assert worker.node.registration_line() == f"register w1 127.0.0.1:{worker.node.port}"
    ready = tmp_path / "ready.json"
    worker.node.write_ready_file(ready)
    data = json.loads(ready.read_text())
    assert (data["worker_id"], data["port"]) == ("w1", worker.node.port)
    assert data["address"] == f"127.0.0.1:{worker.node.port}"


def test_advertised_address(tmp_path: Path) -> None:
    node = WorkerNode(settings(tmp_path, host="0.0.0.0", advertise_host="10.1.2.3"))
    assert node.advertised_host() == "10.1.2.3"
    node = WorkerNode(settings(tmp_path, host="0.0.0.0"))
    assert node.advertised_host("127.0.0.1:50051") == "127.0.0.1"
