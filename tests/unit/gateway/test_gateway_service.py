"""A gateway and the master's bus side, wired through an in-memory bus (no sockets):
registration through the master, heartbeats validated and published, a worker moving
to another gateway, sessions forgotten, results forwarded, an unreachable master."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from cloudai.bus.subjects import Subjects
from cloudai.gateway.service import GatewayService
from cloudai.gateway.sessions import SessionCache
from cloudai.master.bus_ingest import BusIngest
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import MasterService
from cloudai.proto import pb
from cloudai.telemetry.manager import TelemetryManager
from tests.memory_bus import MemoryBus


class Aborted(grpc.aio.AbortError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__()
        self.code, self.details = code, details


class Context:
    """What the gateway's handlers use of a gRPC context (plaintext: no certificate)."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:4711"

    def auth_context(self) -> dict[str, Any]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


class Results:
    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        return False, f"task {result.task_id} was not assigned to {result.worker_id}"


@dataclass
class Cluster:
    bus: MemoryBus
    registry: WorkerRegistry
    telemetry: TelemetryManager
    ingest: BusIngest
    gateways: list[GatewayService]


async def cluster(gateways: int = 2) -> Cluster:
    bus, subjects, registry = MemoryBus(), Subjects(), WorkerRegistry()
    telemetry = TelemetryManager(30.0)
    service = MasterService(registry, telemetry, Results())
    ingest = BusIngest(bus, subjects, registry, telemetry, service, None)
    await ingest.start()
    made = []
    for i in range(gateways):
        gateway = GatewayService(f"g{i}", bus, subjects, SessionCache(), call_timeout=1.0)
        await bus.subscribe(subjects.sessions, gateway.on_session_event)
        made.append(gateway)
    return Cluster(bus, registry, telemetry, ingest, made)


def heartbeat(worker_id: str, cpu: float = 12.5) -> pb.Heartbeat:
    return pb.Heartbeat(worker_id=worker_id, cpu_usage=cpu, memory_usage=40.0)


async def register(gateway: GatewayService, worker_id: str) -> pb.RegisterAck:
    info = pb.WorkerInfo(worker_id=worker_id, worker_ip="127.0.0.1:6000", total_cpu=2)
    return await gateway.RegisterWorker(info, Context())  # type: ignore[arg-type]


async def send(gateway: GatewayService, hb: pb.Heartbeat) -> pb.HeartbeatAck:
    return await gateway.SendHeartbeat(hb, Context())  # type: ignore[arg-type]


async def test_heartbeats_reach_the_master_through_either_gateway() -> None:
    c = await cluster()
    c.registry.authorise("w1")
    ack = await register(c.gateways[0], "w1")
    assert ack.success and c.registry.has_session("w1")
    assert (await send(c.gateways[0], heartbeat("w1", 10.0))).success
    state = c.telemetry.get_worker_telemetry("w1")
    assert state is not None and state.cpu_usage == 10.0
    assert c.ingest.stats.heartbeats == 1
    # The worker moves to the other gateway: one Session question, no new registration.
    assert (await send(c.gateways[1], heartbeat("w1", 20.0))).success
    assert (await send(c.gateways[1], heartbeat("w1", 30.0))).success
    assert c.gateways[1].stats.session_checks == 1
    assert c.registry.session_of("w1") == 1
    state = c.telemetry.get_worker_telemetry("w1")
    assert state is not None and state.cpu_usage == 30.0


async def test_unregistered_and_invalid_heartbeats_are_refused_and_not_published() -> None:
    c = await cluster(1)
    gateway = c.gateways[0]
    with pytest.raises(Aborted) as refused:
        await send(gateway, heartbeat("w1"))
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    assert "call RegisterWorker first" in refused.value.details
    c.registry.authorise("w1")
    await register(gateway, "w1")
    with pytest.raises(Aborted) as invalid:
        await send(gateway, heartbeat("w1", cpu=150.0))
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert not [s for s, _ in c.bus.published if s.startswith("cloudai.telemetry.")]
    assert gateway.stats.invalid_messages == 1 and gateway.stats.heartbeats_refused == 1


async def test_an_unauthorised_registration_gets_the_masters_answer() -> None:
    c = await cluster(1)
    ack = await register(c.gateways[0], "stranger")
    assert not ack.success and "not authorised" in ack.message
    assert not c.gateways[0]._sessions.holds("stranger", "")


async def test_unregistering_a_worker_makes_every_gateway_ask_again() -> None:
    c = await cluster()
    c.registry.authorise("w1")
    await register(c.gateways[0], "w1")
    await send(c.gateways[1], heartbeat("w1"))
    await asyncio.sleep(0)  # the forget event's task
    c.registry.revoke("w1")
    await asyncio.sleep(0)
    for gateway in c.gateways:
        with pytest.raises(Aborted) as refused:
            await send(gateway, heartbeat("w1"))
        assert refused.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_heartbeat_the_master_has_no_session_for_is_dropped_and_forgotten() -> None:
    c = await cluster(1)
    gateway = c.gateways[0]
    c.registry.authorise("w1")
    await register(gateway, "w1")
    c.registry.load(c.registry.get("w1"))  # type: ignore[arg-type]  # the session is gone
    await send(gateway, heartbeat("w1"))  # the gateway still believed it
    await asyncio.sleep(0)
    assert c.ingest.stats.heartbeats_unknown == 1
    with pytest.raises(Aborted) as refused:  # told to forget: the next one asks
        await send(gateway, heartbeat("w1"))
    assert refused.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_restarted_master_resets_every_gateways_sessions() -> None:
    c = await cluster(1)
    gateway = c.gateways[0]
    c.registry.authorise("w1")
    await register(gateway, "w1")
    assert gateway._sessions.holds("w1", "")
    restarted = BusIngest(
        c.bus,
        Subjects(),
        WorkerRegistry(),
        c.telemetry,
        MasterService(WorkerRegistry(), c.telemetry, Results()),
        None,
    )
    await restarted.start()
    assert not gateway._sessions.holds("w1", "")


async def test_results_are_forwarded_and_answered_by_the_master() -> None:
    c = await cluster(1)
    gateway = c.gateways[0]
    c.registry.authorise("w1")
    await register(gateway, "w1")
    result = pb.TaskResult(task_id="t1", worker_id="w1", status="success")
    ack = await gateway.ReportTaskCompletion(result, Context())  # type: ignore[arg-type]
    assert not ack.success and "was not assigned" in ack.message
    with pytest.raises(Aborted) as unimplemented:  # this master keeps no output
        await gateway.AppendTaskOutput(
            pb.TaskOutput(task_id="t1", worker_id="w1", attempt=1, data=b"x"),
            Context(),  # type: ignore[arg-type]
        )
    assert unimplemented.value.code is grpc.StatusCode.UNIMPLEMENTED


async def test_no_master_on_the_bus_is_unavailable() -> None:
    bus, subjects = MemoryBus(), Subjects()
    gateway = GatewayService("g0", bus, subjects, SessionCache(), call_timeout=0.5)
    with pytest.raises(Aborted) as unavailable:
        await register(gateway, "w1")
    assert unavailable.value.code is grpc.StatusCode.UNAVAILABLE
    assert "cannot be reached through gateway g0" in unavailable.value.details
    assert gateway.stats.bus_unavailable == 1
