"""The master's gRPC service (the worker -> master RPCs of `cluster.MasterWorker`).

Handlers do the minimum: validate, check the worker's session, hand the heartbeat to
the TelemetryManager (never awaiting anything slow) and answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from cloudai.master.registry import WorkerRegistry
from cloudai.proto import pb, rpc
from cloudai.telemetry.manager import TelemetryManager
from cloudai.validation import (
    InvalidMessage,
    validate_heartbeat,
    validate_task_result,
    validate_worker_info,
)

log = logging.getLogger(__name__)

_HEARTBEAT_OK = pb.HeartbeatAck(success=True)


class ResultSink(Protocol):
    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]: ...


@dataclass(slots=True)
class ServiceStats:
    registrations: int = 0
    registrations_refused: int = 0
    heartbeats: int = 0
    heartbeats_unknown: int = 0
    invalid_messages: int = 0
    streams_opened: int = 0
    streams_broken: int = 0
    results: int = 0


def not_registered_message(worker_id: str) -> str:
    return f"worker {worker_id!r} is not registered with this master: call RegisterWorker first"


class MasterService(rpc.MasterWorkerServicer):
    def __init__(
        self,
        registry: WorkerRegistry,
        telemetry: TelemetryManager,
        results: ResultSink,
        on_registered: Callable[[str], None] | None = None,
        on_heartbeat: Callable[[str], None] | None = None,
    ) -> None:
        self._registry = registry
        self._telemetry = telemetry
        self._results = results
        self._on_registered = on_registered
        self._on_heartbeat = on_heartbeat
        self._streams: set[asyncio.Task[object]] = set()
        self.stats = ServiceStats()

    def end_streams(self) -> None:
        """Shutdown: end open heartbeat streams now rather than after the grace period."""
        for task in self._streams:
            task.cancel()

    async def RegisterWorker(
        self, request: pb.WorkerInfo, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        try:
            validate_worker_info(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            return pb.RegisterAck(success=False, message=f"invalid WorkerInfo: {exc}")
        ok, message = self._registry.register(request)
        if not ok:
            self.stats.registrations_refused += 1
            log.warning("refused RegisterWorker from %s: %s", context.peer(), message)
            return pb.RegisterAck(success=False, message=message)
        self.stats.registrations += 1
        self._telemetry.register_worker(request.worker_id)
        if self._on_registered is not None:
            self._on_registered(request.worker_id)
        log.info("worker %s registered (%s)", request.worker_id, context.peer())
        return pb.RegisterAck(success=True, message=message)

    async def SendHeartbeat(
        self, request: pb.Heartbeat, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        status, message = self._accept(request)
        if status is not None:
            await context.abort(status, message)
        return _HEARTBEAT_OK

    async def StreamHeartbeats(
        self, request_iterator: AsyncIterator[pb.Heartbeat], context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        self.stats.streams_opened += 1
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            async for heartbeat in request_iterator:
                status, message = self._accept(heartbeat)
                if status is not None:
                    await context.abort(status, message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            # The worker went away mid-stream; liveness treats it as missed heartbeats.
            self.stats.streams_broken += 1
            raise
        finally:
            self._streams.discard(task)
        return _HEARTBEAT_OK

    def _accept(self, heartbeat: pb.Heartbeat) -> tuple[grpc.StatusCode | None, str]:
        try:
            validate_heartbeat(heartbeat)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            return grpc.StatusCode.INVALID_ARGUMENT, f"invalid heartbeat: {exc}"
        worker_id = heartbeat.worker_id
        if not self._registry.has_session(worker_id):
            self.stats.heartbeats_unknown += 1
            return grpc.StatusCode.NOT_FOUND, not_registered_message(worker_id)
        self.stats.heartbeats += 1
        self._telemetry.process_heartbeat(heartbeat)
        if self._on_heartbeat is not None:
            self._on_heartbeat(worker_id)
        return None, ""

    async def ReportTaskCompletion(
        self, request: pb.TaskResult, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        try:
            validate_task_result(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid TaskResult: {exc}")
        if request.worker_id not in self._registry:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, not_registered_message(request.worker_id)
            )
        ok, message = await self._results.record_result(request)
        self.stats.results += 1
        return pb.Ack(success=ok, message=message)
