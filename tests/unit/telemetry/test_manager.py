from __future__ import annotations

import asyncio

import pytest

from cloudai.proto import pb
from cloudai.telemetry.liveness import LivenessState
from cloudai.telemetry.manager import (
    ALL_EVENTS,
    TelemetryEvent,
    TelemetryManager,
    subscribes_to,
)
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


async def test_checker_runs_every_quarter_timeout_at_most_every_second() -> None:
    assert TelemetryManager(30.0).check_interval == pytest.approx(1.0)
    m = TelemetryManager(0.2)
    assert m.check_interval == pytest.approx(0.05)
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


# -- liveness: states on the stream, stalls, grace, all silent, unknown workers ----------

Seen = list[tuple[str, TelemetryEvent, bool, str]]


def record_all(manager: TelemetryManager) -> Seen:
    """Subscribe to every event (as the hub does); what was published, in order."""
    seen: Seen = []

    @subscribes_to(*ALL_EVENTS)
    def on(state: WorkerTelemetry, event: TelemetryEvent) -> None:
        seen.append((state.worker_id, event, state.is_active, state.to_json()["state"]))

    manager.subscribe(on)
    return seen


async def test_suspect_is_published_to_subscribers_that_ask(
    manager: TelemetryManager, clock: FakeClock
) -> None:
    classic: list[TelemetryEvent] = []
    manager.subscribe(lambda s, e: classic.append(e))
    seen = record_all(manager)
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    clock.now += 15.0
    assert manager.check_inactive() == []
    assert manager.get_worker_telemetry("w1").is_active is True  # type: ignore[union-attr]
    assert manager.liveness_state("w1") is LivenessState.SUSPECT
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    assert seen == [
        ("w1", TelemetryEvent.UPDATE, True, "registered"),
        ("w1", TelemetryEvent.UPDATE, True, "active"),
        ("w1", TelemetryEvent.SUSPECT, True, "suspect"),
        ("w1", TelemetryEvent.UPDATE, True, "active"),
    ]
    assert classic == [TelemetryEvent.UPDATE] * 3  # no SUSPECT for a classic subscriber


async def test_subscribe_with_explicit_events(manager: TelemetryManager) -> None:
    got: list[TelemetryEvent] = []
    unsubscribe = manager.subscribe(lambda s, e: got.append(e), events=[TelemetryEvent.UNKNOWN])
    manager.add_known(["u1"])
    manager.register_worker("u1")
    assert got == [TelemetryEvent.UNKNOWN]
    unsubscribe()
    manager.add_known(["u2"])
    assert got == [TelemetryEvent.UNKNOWN]


async def test_known_workers_are_listed_unknown_until_they_come_back(
    manager: TelemetryManager, clock: FakeClock
) -> None:
    classic: list[tuple[str, TelemetryEvent]] = []
    manager.subscribe(lambda s, e: classic.append((s.worker_id, e)))
    seen = record_all(manager)
    manager.add_known(["a", "b"], last_update={"a": 1_700_000_000.0})
    manager.add_known(["a"])  # already known: nothing
    assert seen == [
        ("a", TelemetryEvent.UNKNOWN, False, "unknown"),
        ("b", TelemetryEvent.UNKNOWN, False, "unknown"),
    ]
    assert classic == []  # the store needs no row written for them
    # Not seen since start: the API's reads leave them out; counts list them.
    assert manager.get_worker_telemetry("a") is None
    assert manager.get_all_worker_telemetry() == {}
    assert manager.worker_count() == (0, 0)
    assert manager.liveness_counts()["unknown"] == 2
    clock.now += 1000.0
    assert manager.check_inactive() == []  # never judged while unknown
    manager.register_worker("a")
    assert seen[-1] == ("a", TelemetryEvent.UPDATE, True, "registered")
    assert manager.get_worker_telemetry("a").last_update == 1_764_300_000.0  # type: ignore[union-attr]
    assert classic == [("a", TelemetryEvent.UPDATE)]
    assert manager.worker_count() == (1, 1)
    manager.process_heartbeat(heartbeat("b"))  # a heartbeat alone also brings it back
    await settle()
    assert manager.liveness_states() == {"a": LivenessState.REGISTERED, "b": LivenessState.ACTIVE}
    manager.unregister_worker("a")
    assert seen[-1] == ("a", TelemetryEvent.REMOVED, False, "removed")


async def test_unknown_state_keeps_its_stored_last_update(manager: TelemetryManager) -> None:
    states: list[WorkerTelemetry] = []
    manager.subscribe(lambda s, e: states.append(s), events=ALL_EVENTS)
    manager.add_known(["a"], last_update={"a": 1_700_000_000.9})
    assert states[0].to_json()["last_update"] == 1_700_000_000
    manager.authorise_worker("new")
    manager.authorise_worker("new")
    assert [s.to_json()["state"] for s in states] == ["unknown", "authorised"]
    assert manager.liveness_counts()["authorised"] == 1


async def test_an_inactive_worker_that_registers_again_comes_back(
    manager: TelemetryManager, clock: FakeClock
) -> None:
    classic: list[TelemetryEvent] = []
    manager.register_worker("w1")
    manager.subscribe(lambda s, e: classic.append(e))
    clock.now += 30.0
    assert manager.check_inactive() == ["w1"]
    manager.register_worker("w1")
    assert classic == [TelemetryEvent.INACTIVE, TelemetryEvent.ACTIVE]
    assert manager.liveness_state("w1") is LivenessState.REGISTERED


async def test_a_stalled_master_marks_nobody_inactive(
    manager: TelemetryManager, clock: FakeClock
) -> None:
    """SIGSTOP for 60 s: at resume the checker fires 60 s late, possibly before the
    heartbeats that waited in the sockets are received. Nobody becomes inactive."""
    seen = record_all(manager)
    for i in range(40):
        manager.process_heartbeat(heartbeat(f"w{i}"))
    await settle()
    clock.now += 60.0  # stopped
    assert manager.check_inactive(lateness=59.0) == []  # the checker runs first at resume
    assert manager.stats.master_stalls == 1
    for i in range(40):  # then the queued heartbeats are received
        manager.process_heartbeat(heartbeat(f"w{i}"))
    clock.now += 1.0
    assert manager.check_inactive() == []
    clock.now += 10.0
    assert manager.check_inactive() == []
    assert {event for _, event, _, _ in seen} == {TelemetryEvent.UPDATE}
    assert manager.worker_count() == (40, 40)


async def test_a_stall_is_credited_even_if_heartbeats_come_late(
    manager: TelemetryManager, clock: FakeClock
) -> None:
    """After the stall the workers are in back-off: their heartbeats come some seconds
    after the resume. The master's stopped time counts for nobody's silence."""
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    clock.now += 60.0
    manager.check_inactive(lateness=59.0)
    clock.now += 20.0  # 80 s since the last heartbeat, 20 s of it with the master running
    assert manager.check_inactive() == []
    assert manager.liveness_state("w1") is LivenessState.SUSPECT
    manager.process_heartbeat(heartbeat("w1"))
    await settle()
    assert manager.liveness_state("w1") is LivenessState.ACTIVE


async def test_queued_heartbeats_are_applied_before_judging(clock: FakeClock) -> None:
    m = TelemetryManager(30.0, clock=clock)
    m.start()
    seen = record_all(m)
    m.process_heartbeat(heartbeat("w1"))
    await settle()
    clock.now += 20.0
    m.check_inactive()  # suspect
    m.process_heartbeat(heartbeat("w1", cpu=77.0))  # received, its task has not run yet
    m.check_inactive()
    assert seen[-1] == ("w1", TelemetryEvent.UPDATE, True, "active")
    assert m.get_worker_telemetry("w1").cpu_usage == 77.0  # type: ignore[union-attr]
    await m.shutdown()


async def test_no_worker_becomes_inactive_during_the_start_up_grace(clock: FakeClock) -> None:
    m = TelemetryManager(30.0, clock=clock)
    m.register_worker("early")  # registered before start (e.g. --allow-worker)
    clock.now += 100.0
    m.start()
    clock.now += 29.0
    assert m.check_inactive() == []
    clock.now += 1.0
    assert m.check_inactive() == ["early"]
    await m.shutdown()


async def test_all_workers_silent_at_once_is_one_connectivity_event(
    manager: TelemetryManager, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen = record_all(manager)
    for i in range(5):
        manager.process_heartbeat(heartbeat(f"w{i}"))
    await settle()
    clock.now += 30.0
    with caplog.at_level("WARNING", logger="cloudai.telemetry.manager"):
        assert manager.check_inactive() == []
        clock.now += 1.0
        assert manager.check_inactive() == []
    assert manager.stats.connectivity_events == 1
    assert manager.connectivity.value == "lost"
    assert sum("went silent at once" in r.getMessage() for r in caplog.records) == 1
    assert manager.worker_count() == (5, 5)  # suspect, still counted active
    clock.now += 7.0  # the hold has passed, still nothing: now they are inactive
    assert sorted(manager.check_inactive()) == [f"w{i}" for i in range(5)]
    manager.process_heartbeat(heartbeat("w2"))
    await settle()
    assert manager.connectivity.value == "ok"
    assert seen[-1] == ("w2", TelemetryEvent.ACTIVE, True, "active")


async def test_the_checker_measures_its_own_lateness(clock: FakeClock) -> None:
    """The checker's timer runs on the event loop; the injected clock jumps 60 s while it
    waits, as a SIGSTOP would: the checker sees itself late and holds."""
    m = TelemetryManager(0.2, clock=clock)
    for i in range(3):
        m.register_worker(f"w{i}")
    m.start()
    await settle()  # the checker waits for its first tick
    stalled = asyncio.Event()
    real_check = m.check_inactive

    def check(lateness: float = 0.0) -> list[str]:
        result = real_check(lateness)
        if lateness > 0:
            stalled.set()
        return result

    m.check_inactive = check  # type: ignore[method-assign]
    clock.now += 60.0
    await asyncio.wait_for(stalled.wait(), 5.0)
    assert m.stats.master_stalls == 1
    assert m.worker_count() == (3, 3)
    await m.shutdown()
