"""The synchronous server's hand-off: heartbeats admitted on gRPC's threads, applied on
the event loop in batches (one ``call_soon_threadsafe`` per batch). No sockets: a real
event loop, real threads, fakes for the registry and the telemetry manager."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from cloudai.master.service import MasterService
from cloudai.master.sync_ingest import HeartbeatHandoff, SyncMasterServicer
from cloudai.proto import pb
from cloudai.proto.tolerant import Undecodable


class CountingLoop:
    """An event loop's ``call_soon_threadsafe``, counted, run when asked."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.closed = False

    def call_soon_threadsafe(self, callback: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def test_offers_until_the_loop_runs_are_one_batch_in_order() -> None:
    loop = CountingLoop()
    batches: list[list[int]] = []
    handoff = HeartbeatHandoff(loop, batches.append)  # type: ignore[arg-type]
    for item in range(5):
        handoff.offer(item)
    assert len(loop.callbacks) == 1  # one callback for the batch, not one per item
    loop.run()
    handoff.offer(5)
    handoff.offer(6)
    loop.run()
    assert batches == [[0, 1, 2, 3, 4], [5, 6]]
    assert handoff.batches == 2


def test_a_closed_loop_refuses_and_counts() -> None:
    loop = CountingLoop()
    batches: list[list[int]] = []
    handoff = HeartbeatHandoff(loop, batches.append)  # type: ignore[arg-type]
    loop.closed = True
    assert not handoff.offer(1)
    assert not handoff.offer(2)
    assert batches == [] and handoff.refused == 2


def test_a_loop_that_falls_behind_gets_refusals_not_a_growing_backlog() -> None:
    loop = CountingLoop()
    batches: list[list[int]] = []
    handoff = HeartbeatHandoff(loop, batches.append, max_pending=3)  # type: ignore[arg-type]
    assert [handoff.offer(i) for i in range(5)] == [True, True, True, False, False]
    loop.run()
    assert handoff.offer(5)  # room again once the loop took the batch
    loop.run()
    assert batches == [[0, 1, 2], [5]] and handoff.refused == 2


def test_close_applies_what_waits_and_refuses_more() -> None:
    loop = CountingLoop()
    batches: list[list[int]] = []
    handoff = HeartbeatHandoff(loop, batches.append)  # type: ignore[arg-type]
    assert handoff.offer(1)
    handoff.close()
    assert not handoff.offer(2)
    loop.run()  # the callback scheduled before close finds nothing left
    assert batches == [[1]] and handoff.refused == 1


async def test_many_threads_lose_nothing_and_batch_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    applied: list[int] = []
    batches = 0
    done = asyncio.Event()
    total = 4 * 2000

    def apply(batch: list[int]) -> None:
        nonlocal batches
        assert threading.current_thread() is threading.main_thread()  # the loop's thread
        batches += 1
        applied.extend(batch)
        if len(applied) == total:
            done.set()

    handoff = HeartbeatHandoff(loop, apply, max_pending=total)  # room for all: no refusal

    def offer_from_thread(base: int) -> None:
        for i in range(2000):
            handoff.offer(base + i)

    threads = [threading.Thread(target=offer_from_thread, args=(t * 10_000,)) for t in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.wait_for(done.wait(), 20)
    for thread in threads:
        thread.join()
    assert sorted(applied) == sorted(t * 10_000 + i for t in range(4) for i in range(2000))
    for t in range(4):  # each thread's offers stay in its order
        mine = [x for x in applied if t * 10_000 <= x < (t + 1) * 10_000]
        assert mine == sorted(mine)
    assert batches == handoff.batches <= total


class FakeRegistry:
    def __init__(self, sessions: set[str]) -> None:
        self.sessions = sessions

    def has_session(self, worker_id: str) -> bool:
        return worker_id in self.sessions


class FakeTelemetry:
    def __init__(self) -> None:
        self.heartbeats: list[pb.Heartbeat] = []

    def process_heartbeat(self, heartbeat: pb.Heartbeat) -> None:
        self.heartbeats.append(heartbeat)


def service_with(sessions: set[str]) -> tuple[MasterService, FakeTelemetry, FakeRegistry]:
    registry, telemetry = FakeRegistry(sessions), FakeTelemetry()
    service = MasterService(registry, telemetry, results=None)  # type: ignore[arg-type]
    return service, telemetry, registry


def test_admit_lets_through_only_valid_heartbeats_of_workers_with_a_session() -> None:
    service, _telemetry, _registry = service_with({"w1"})
    assert service.admit(pb.Heartbeat(worker_id="w1", cpu_usage=5.0), None)
    assert not service.admit(pb.Heartbeat(worker_id="w2", cpu_usage=5.0), None)  # unknown
    assert not service.admit(pb.Heartbeat(worker_id="w1", cpu_usage=500.0), None)  # invalid
    assert not service.admit(Undecodable("cluster.Heartbeat", "truncated"), None)
    assert service.stats.heartbeats == 0  # admit reads only; the loop counts


def test_apply_admitted_applies_in_order_and_skips_a_worker_gone_since() -> None:
    service, telemetry, registry = service_with({"w1", "w2"})
    seen: list[str] = []
    service._on_heartbeat = seen.append
    batch = [pb.Heartbeat(worker_id=w, cpu_usage=1.0) for w in ("w1", "w2", "w1")]
    registry.sessions.discard("w2")  # unregistered between admission and the loop
    service.apply_admitted(batch)
    assert [h.worker_id for h in telemetry.heartbeats] == ["w1", "w1"] == seen
    assert service.stats.heartbeats == 2 and service.stats.heartbeats_unknown == 1


async def test_the_sync_servicer_answers_admitted_heartbeats_on_its_thread() -> None:
    loop = asyncio.get_running_loop()
    service, telemetry, _registry = service_with({"w1"})
    handoff = HeartbeatHandoff(loop, service.apply_admitted)
    servicer = SyncMasterServicer(service, handoff, loop)
    ack = await asyncio.to_thread(
        servicer.SendHeartbeat, pb.Heartbeat(worker_id="w1", cpu_usage=2.0), None
    )
    assert ack.success
    for _ in range(100):
        if telemetry.heartbeats:
            break
        await asyncio.sleep(0)
    assert [h.cpu_usage for h in telemetry.heartbeats] == [2.0]
