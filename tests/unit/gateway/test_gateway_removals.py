"""A worker unregistered on the master leaves a gateway's WebSockets as it leaves the
master's: the master publishes ``removed`` (an in-memory bus, no sockets), the gateway's
TelemetryManager unregisters the worker (its subscribers, the WebSocket hub among them,
get the same last message: ``state`` "removed"), forgets its session, and drops the
heartbeats other gateways published just before they learnt of it."""

from __future__ import annotations

import asyncio

from cloudai.bus.codec import SessionEvent, decode_session_event, encode_telemetry
from cloudai.bus.subjects import Subjects
from cloudai.gateway.server import GatewayServer
from cloudai.gateway.service import GatewayService
from cloudai.gateway.sessions import SessionCache
from cloudai.gateway.settings import GatewaySettings
from cloudai.master.bus_ingest import BusIngest
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import MasterService
from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry
from tests.harness import async_wait_until
from tests.memory_bus import MemoryBus, Msg


class Results:
    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        return False, "no tasks here"


async def test_an_unregistered_worker_is_removed_from_a_gateways_telemetry() -> None:
    bus, subjects = MemoryBus(), Subjects()
    registry, master_telemetry = WorkerRegistry(), TelemetryManager(30.0)
    service = MasterService(registry, master_telemetry, Results())
    ingest = BusIngest(bus, subjects, registry, master_telemetry, service, None)
    await ingest.start()
    sessions = SessionCache()
    server = GatewayServer(GatewaySettings(insecure=True), bus, subjects, sessions)
    server.service = GatewayService("g1", bus, subjects, sessions)
    await bus.subscribe(subjects.sessions, server._on_session_event)
    telemetry = server.telemetry = TelemetryManager(30.0)
    seen: list[tuple[str, str, TelemetryEvent]] = []

    def record(state: WorkerTelemetry, event: TelemetryEvent) -> None:
        seen.append((state.worker_id, state.state, event))

    telemetry.subscribe(record)
    telemetry.start()
    try:
        heartbeat = pb.Heartbeat(worker_id="w1", cpu_usage=10.0, memory_usage=20.0)
        message = Msg(subjects.telemetry("w1"), encode_telemetry(heartbeat.SerializeToString(), 1))
        registry.authorise("w1")
        sessions.grant("w1", "")
        await server._on_telemetry(message)
        await async_wait_until(lambda: telemetry.get_worker_telemetry("w1"), 5, "w1 shown")

        forgets = ingest.stats.forget_events
        registry.revoke("w1")  # what the admin's unregister does on the master
        await async_wait_until(lambda: ("w1", "removed", TelemetryEvent.REMOVED) in seen, 5)
        assert telemetry.get_worker_telemetry("w1") is None
        assert not sessions.holds("w1", "")
        events = [decode_session_event(d) for s, d in bus.published if s == subjects.sessions]
        assert SessionEvent(removed="w1") in events
        assert ingest.stats.removed_events == 1 and ingest.stats.forget_events == forgets

        # A heartbeat another gateway published before it learnt of the removal.
        await server._on_telemetry(message)
        await asyncio.sleep(0)
        assert server.removed_dropped == 1 and telemetry.get_worker_telemetry("w1") is None
        assert [e for w, _, e in seen if w == "w1"][-1] is TelemetryEvent.REMOVED
    finally:
        await telemetry.shutdown()
        await ingest.stop()


async def test_a_removal_for_a_worker_the_gateway_never_showed_is_harmless() -> None:
    bus, subjects = MemoryBus(), Subjects()
    server = GatewayServer(GatewaySettings(insecure=True), bus, subjects)
    server.service = GatewayService("g1", bus, subjects, server.sessions)
    await server._on_session_event(
        Msg(subjects.sessions, b'S1{"removed": "w9", "forget": "w9"}')
    )  # no --ws-port: no telemetry to remove it from
    server.telemetry = TelemetryManager(30.0)
    await server._on_session_event(Msg(subjects.sessions, b'S1{"removed": "w9"}'))
    assert server.telemetry.get_worker_telemetry("w9") is None
