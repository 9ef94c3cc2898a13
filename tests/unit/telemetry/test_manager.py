from __future__ import annotations

import asyncio

import pytest

from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def heartbeat(worker_id: str = "w1", cpu: float = 10.0, tasks: int = 0) -> pb.Heartbeat:
    return pb.Heartbeat(
        worker_id=worker_id,
        cpu_usage=cpu,
        memory_usage=20.0,
        storage_usage=30.0,
        gpu_usage=40.0,
        running_tasks=[
            pb.RunningTask(task_id=f"t{i}", cpu_allocated=1, status="running") for i in range(tasks)
        ],
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def manager(clock: FakeClock):
    m = TelemetryManager(30.0, queue_size=4, clock=clock, wall_clock=lambda: 1_764_300_000.0)
    m.start()
    yield m
    await m.shutdown()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_register_creates_active_entry_and_publishes(manager: TelemetryManager) -> None:
    events: list[tuple[str, TelemetryEvent]] = []
    manager.subscribe(lambda s, e: events.append((s.worker_id, e)))
    manager.register_worker("w1")
    manager.register_worker("w1")  # idempotent
    state = manager.get_worker_telemetry("w1")
    assert state is not None and state.is_active
    assert events == [("w1", TelemetryEvent.UPDATE)]
    assert manager.is_registered("w1")


async def test_heartbeat_is_processed_by_worker_task(manager: TelemetryManager) -> None:
    manager.register_worker("w1")
    manager.process_heartbeat(heartbeat(cpu=55.5, tasks=2))
    await settle()
    state = manager.get_worker_telemetry("w1")
    assert state is not None
    assert state.cpu_usage == 55.5
    assert [t.task_id for t in state.running_tasks] == ["t0", "t1"]
    assert manager.stats.heartbeats_processed == 1


async def test_unknown_worker_is_auto_registered(manager: TelemetryManager) -> None:
    manager.process_heartbeat(heartbeat("new", cpu=1.0))
    await settle()
    assert manager.is_registered("new")
    assert manager.get_worker_telemetry("new").cpu_usage == 1.0  # type: ignore[union-attr]


async def test_full_queue_coalesces_to_newest(manager: TelemetryManager) -> None:
    manager.register_worker("w1")
    seen: list[float] = []
    manager.subscribe(lambda s, e: seen.append(s.cpu_usage))
    for cpu in range(10):  # queue_size=4, no chance for the task to run in between
        manager.process_heartbeat(heartbeat(cpu=float(cpu)))
    await settle()
    assert manager.stats.heartbeats_coalesced == 6
    assert seen == [6.0, 7.0, 8.0, 9.0]
    assert manager.get_worker_telemetry("w1").cpu_usage == 9.0  # type: ignore[union-attr]


async def test_snapshots_are_copies(manager: TelemetryManager) -> None:
    manager.process_heartbeat(heartbeat(cpu=5.0, tasks=1))
    await settle()
    copy = manager.get_worker_telemetry("w1")
    assert copy is not None
    copy.cpu_usage = 99.0
    copy.running_tasks[0].status = "mutated"
    copy.running_tasks.append(copy.running_tasks[0])
    all_copies = manager.get_all_worker_telemetry()
    all_copies["w1"].is_active = False
    all_copies.pop("w1")
    fresh = manager.get_worker_telemetry("w1")
    assert fresh is not None
    assert fresh.cpu_usage == 5.0
    assert fresh.is_active
    assert [t.status for t in fresh.running_tasks] == ["running"]


async def test_inactivity_transitions(manager: TelemetryManager, clock: FakeClock) -> None:
    events: list[tuple[str, TelemetryEvent, bool]] = []
    manager.subscribe(lambda s, e: events.append((s.worker_id, e, s.is_active)))
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    clock.now += 29.9
    assert manager.check_inactive() == []
    clock.now += 0.1
    assert manager.check_inactive() == ["w1"]
    assert manager.check_inactive() == []  # published once
    assert manager.get_worker_telemetry("w1").is_active is False  # type: ignore[union-attr]
    assert manager.worker_count() == (1, 0)
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    assert manager.get_worker_telemetry("w1").is_active is True  # type: ignore[union-attr]
    kinds = [(e, active) for _, e, active in events]
    assert kinds == [
        (TelemetryEvent.UPDATE, True),  # auto-registration
        (TelemetryEvent.UPDATE, True),  # first heartbeat
        (TelemetryEvent.INACTIVE, False),
        (TelemetryEvent.ACTIVE, True),
    ]


async def test_checker_runs_every_half_timeout() -> None:
    m = TelemetryManager(0.2)
    assert m.check_interval == pytest.approx(0.1)
    inactive = asyncio.Event()
    m.subscribe(lambda s, e: inactive.set() if e is TelemetryEvent.INACTIVE else None)
    m.start()
    m.register_worker("w1")
    await asyncio.wait_for(inactive.wait(), 5.0)
    await m.shutdown()


async def test_unregister_publishes_removed(manager: TelemetryManager) -> None:
    manager.register_worker("w1")
    events: list[TelemetryEvent] = []
    manager.subscribe(lambda s, e: events.append(e))
    manager.unregister_worker("w1")
    assert events == [TelemetryEvent.REMOVED]
    assert manager.get_worker_telemetry("w1") is None
    assert not manager.is_registered("w1")


async def test_failing_subscriber_does_not_break_others(manager: TelemetryManager) -> None:
    got: list[str] = []

    def bad(state: WorkerTelemetry, event: TelemetryEvent) -> None:
        raise RuntimeError("boom")

    manager.subscribe(bad)
    manager.subscribe(lambda s, e: got.append(s.worker_id))
    manager.register_worker("w1")
    assert got == ["w1"]
    assert manager.stats.subscriber_errors == 1


async def test_shutdown_stops_every_task_and_applies_queued(clock: FakeClock) -> None:
    m = TelemetryManager(30.0, clock=clock)
    m.start()
    for i in range(20):
        m.register_worker(f"w{i}")
    m.process_heartbeat(heartbeat("w3", cpu=33.0))  # queued, task has not run yet
    before = {t for t in asyncio.all_tasks() if t.get_name().startswith("telemetry-")}
    assert len(before) == 21
    await m.shutdown()
    assert all(t.done() for t in before)
    left = {t for t in asyncio.all_tasks() if t.get_name().startswith("telemetry-")}
    assert left == set()
    assert m.get_worker_telemetry("w3").cpu_usage == 33.0  # type: ignore[union-attr]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        TelemetryManager(0)
    with pytest.raises(ValueError):
        TelemetryManager(1, queue_size=0)
