"""ClusterAdmin: the admin's use cases on real in-memory parts; only the gRPC calls to
workers are faked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cloudai.api.models import TaskSubmission, WorkerRegistration
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind, MasterCounters
from cloudai.master.registry import WorkerRegistry
from cloudai.master.tasks import NotStored, TaskBook
from cloudai.master.worker_link import WorkerUnavailable
from cloudai.proto import pb
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryManager


class FakeLink:
    def __init__(self) -> None:
        self.connected: list[str] = []
        self.accept = True
        self.reachable = True

    def connect(self, worker_id: str) -> None:
        self.connected.append(worker_id)

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        if not self.reachable:
            raise WorkerUnavailable(f"worker {worker_id} did not answer AssignTask")
        return pb.TaskAck(success=self.accept, message="ok" if self.accept else "busy")

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return pb.TaskAck(success=True, message="cancelling")


class Parts:
    def __init__(self, registry_committed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.now = 1000.0
        self.registry = WorkerRegistry(clock=lambda: self.now)
        self.telemetry = TelemetryManager(30.0)
        self.link = FakeLink()
        self.tasks = TaskBook(self.registry, self.link, clock=lambda: self.now)  # type: ignore[arg-type]
        counters = MasterCounters(
            heartbeats=lambda: 12,
            heartbeats_per_second=lambda: 3.14159,
            websocket_clients=lambda: 2,
            fanout_tick=lambda: 0.005,
        )
        self.admin = ClusterAdmin(
            self.registry,
            self.telemetry,
            self.tasks,
            self.link,  # type: ignore[arg-type]
            counters,
            clock=lambda: self.now,
            registry_committed=registry_committed,
        )

    async def join(self, worker_id: str) -> None:
        await self.admin.authorise_worker(WorkerRegistration(worker_id=worker_id))
        ok, message = self.registry.register(pb.WorkerInfo(worker_id=worker_id, total_cpu=4))
        assert ok, message


@pytest.fixture
def parts() -> Parts:
    return Parts()


async def test_authorise_calls_master_register_only_with_an_address(parts: Parts) -> None:
    worker = await parts.admin.authorise_worker(WorkerRegistration(worker_id="w1"))
    assert (worker.worker_id, worker.registered, worker.last_update) == ("w1", False, None)
    assert parts.link.connected == []
    await parts.admin.authorise_worker(
        WorkerRegistration(worker_id="w2", address="127.0.0.1:50052")
    )
    assert parts.link.connected == ["w2"]
    assert parts.admin.worker_ids() == ["w1", "w2"]


async def test_register_of_a_known_worker_always_reannounces(parts: Parts) -> None:
    """Also for a worker that holds a session: the call is what brings back a worker that
    lost its master; and with the address stored, the admin need not type it again."""
    request = WorkerRegistration(worker_id="w1", address="127.0.0.1:50052")
    await parts.admin.authorise_worker(request)
    ok, message = parts.registry.register(pb.WorkerInfo(worker_id="w1"))
    assert ok, message
    await parts.admin.authorise_worker(request)
    await parts.admin.authorise_worker(WorkerRegistration(worker_id="w1"))
    assert parts.link.connected == ["w1", "w1", "w1"]
    assert parts.registry.get("w1").address == "127.0.0.1:50052"  # type: ignore[union-attr]


async def test_unknown_workers_and_tasks_are_not_found(parts: Parts) -> None:
    with pytest.raises(AdminError) as refused:
        await parts.admin.revoke_worker("nobody")
    assert refused.value.kind is ErrorKind.NOT_FOUND
    for call in (
        lambda: parts.admin.get_worker("nobody"),
        lambda: parts.admin.get_task("t-none"),
        lambda: parts.admin.task_logs("t-none"),
    ):
        with pytest.raises(AdminError) as refused:
            call()
        assert refused.value.kind is ErrorKind.NOT_FOUND


async def test_submit_outcomes(parts: Parts) -> None:
    with pytest.raises(AdminError) as refused:
        await parts.admin.submit_task(TaskSubmission(worker_id="nobody", command="true"))
    assert refused.value.kind is ErrorKind.NOT_FOUND
    await parts.admin.authorise_worker(WorkerRegistration(worker_id="w1"))
    waiting = await parts.admin.submit_task(
        TaskSubmission(worker_id="w1", command="true", task_id="early")
    )  # the worker is not connected: the task waits for it
    assert waiting.status is TaskStatus.QUEUED
    assert waiting.message.startswith("waiting for worker 'w1' to connect")
    await parts.join("w1")
    task = await parts.admin.submit_task(
        TaskSubmission(worker_id="w1", command="true", task_id="a")
    )
    assert (task.status, task.worker_id, task.message) == (TaskStatus.ASSIGNED, "w1", "ok")
    with pytest.raises(AdminError) as refused:
        await parts.admin.submit_task(TaskSubmission(worker_id="w1", command="x", task_id="a"))
    assert refused.value.kind is ErrorKind.CONFLICT
    with pytest.raises(AdminError) as refused:
        await parts.admin.submit_task(TaskSubmission.model_construct(worker_id="w1"))
    assert refused.value.kind is ErrorKind.INVALID
    parts.link.accept = False
    rejected = await parts.admin.submit_task(TaskSubmission(worker_id="w1", command="x"))
    assert (rejected.status, rejected.message) == (TaskStatus.REJECTED, "busy")
    parts.link.reachable = False
    with pytest.raises(AdminError) as refused:
        await parts.admin.submit_task(TaskSubmission(worker_id="w1", command="y", task_id="c"))
    assert refused.value.kind is ErrorKind.UNAVAILABLE
    assert parts.admin.get_task("c").status is TaskStatus.REJECTED


async def test_lists_logs_and_summary(parts: Parts) -> None:
    await parts.join("w1")
    for n, task_id in enumerate(("b", "a", "c")):
        parts.now = 1000.0 + n
        await parts.admin.submit_task(
            TaskSubmission(worker_id="w1", command="true", task_id=task_id)
        )
    await parts.tasks.record_result(
        pb.TaskResult(task_id="a", worker_id="w1", status="success", logs="hi\n", exit_code=0)
    )
    assert [t.task_id for t in parts.admin.list_tasks()] == ["b", "a", "c"]
    assert [t.task_id for t in parts.admin.list_tasks(status=TaskStatus.SUCCESS)] == ["a"]
    assert parts.admin.list_tasks(worker_id="w2") == []
    assert [t.task_id for t in parts.admin.list_tasks(limit=2)] == ["a", "c"]  # the newest 2
    assert [t.task_id for t in parts.admin.list_tasks(limit=9)] == ["b", "a", "c"]
    assert [t.task_id for t in parts.admin.list_tasks(TaskStatus.ASSIGNED, limit=1)] == ["c"]
    assert parts.admin.task_ids() == ["c", "a", "b"]
    logs = parts.admin.task_logs("a")
    assert (logs.status, logs.logs, logs.exit_code, logs.time) == ("success", "hi\n", 0, 1002.0)
    assert parts.admin.get_task("a").logs == "hi\n"
    cancelled = await parts.admin.cancel_task("b")
    assert cancelled.message == "cancelling"
    with pytest.raises(AdminError) as refused:
        await parts.admin.cancel_task("a")
    assert refused.value.kind is ErrorKind.CONFLICT
    summary = parts.admin.summary()
    assert summary.workers == 1 and summary.tasks_running == 2 and summary.tasks_finished == 1
    assert summary.tasks_by_status == {"assigned": 2, "success": 1}
    assert (summary.heartbeats, summary.heartbeats_per_second) == (12, 3.14)
    assert (summary.websocket_clients, summary.fanout_tick_ms) == (2, 5.0)


async def test_revoke_forgets_the_worker(parts: Parts) -> None:
    await parts.join("w1")
    await parts.admin.revoke_worker("w1")
    assert parts.admin.list_workers() == []


async def test_any_worker_places_the_task_where_it_fits(parts: Parts) -> None:
    for worker_id, cpu in (("small", 2), ("big", 16), ("down", 64)):
        await parts.admin.authorise_worker(WorkerRegistration(worker_id=worker_id))
        ok, _ = parts.registry.register(
            pb.WorkerInfo(worker_id=worker_id, total_cpu=cpu, total_memory=64)
        )
        assert ok
    parts.telemetry.start()
    try:
        for worker_id, usage in (("small", 5.0), ("big", 40.0)):  # "down" never heartbeats
            parts.telemetry.process_heartbeat(
                pb.Heartbeat(worker_id=worker_id, cpu_usage=usage, memory_usage=10.0)
            )
        for _ in range(50):
            await asyncio.sleep(0)
        fits_small = await parts.admin.submit_task(
            TaskSubmission(any_worker=True, command="true", req_cpu=1)
        )
        assert fits_small.worker_id == "small"  # the least loaded that fits
        only_big = await parts.admin.submit_task(
            TaskSubmission(any_worker=True, command="true", req_cpu=8)
        )
        assert only_big.worker_id == "big"
        with pytest.raises(AdminError) as refused:
            await parts.admin.submit_task(
                TaskSubmission(any_worker=True, command="true", req_cpu=32)
            )
        assert refused.value.kind is ErrorKind.UNAVAILABLE
        assert "no active worker has 32 CPU" in refused.value.message
    finally:
        await parts.telemetry.shutdown()


def test_worker_id_or_any_worker() -> None:
    from pydantic import ValidationError

    for body in ({"command": "x"}, {"command": "x", "worker_id": "w", "any_worker": True}):
        with pytest.raises(ValidationError, match="either a worker_id or any_worker"):
            TaskSubmission.model_validate(body)


async def test_register_and_unregister_answer_only_once_stored() -> None:
    """The admin is told "done" only when the store committed it; a store that does not
    confirm makes the answer UNAVAILABLE, and the master does not call the worker yet."""
    confirmations: list[str] = []
    stored = True

    async def committed() -> None:
        confirmations.append("asked")
        if not stored:
            raise NotStored("the database is unreachable")

    parts = Parts(registry_committed=committed)
    await parts.admin.authorise_worker(WorkerRegistration(worker_id="w1", address="h:1"))
    assert confirmations == ["asked"] and parts.link.connected == ["w1"]
    stored = False
    with pytest.raises(AdminError) as refused:
        await parts.admin.authorise_worker(WorkerRegistration(worker_id="w2", address="h:2"))
    assert refused.value.kind is ErrorKind.UNAVAILABLE
    assert "worker 'w2' is authorised in this master, but not stored yet" in refused.value.message
    assert parts.link.connected == ["w1"]
    with pytest.raises(AdminError) as refused:
        await parts.admin.revoke_worker("w1")
    assert refused.value.kind is ErrorKind.UNAVAILABLE
