"""The master's gRPC service (the worker -> master RPCs of `cluster.MasterWorker`).

Handlers do the minimum: validate, check who is calling, check the worker's session,
hand the heartbeat to the TelemetryManager (never awaiting anything slow) and answer.

Who is calling (secure mode, mutual TLS): a worker acts only for the id in its
certificate, and only with the certificate bound to that id when it joined; anything
else is refused (UNAUTHENTICATED without a certificate, PERMISSION_DENIED with another
one's) and logged once per peer a minute, not once per call. In plaintext mode
(``--insecure``, the Go protocol) there is no certificate and no such check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc

from cloudai.master.output_service import OutputRefused, TaskOutputs, check_chunk
from cloudai.master.registry import WorkerRegistry
from cloudai.master.task_output import OutputUnavailable
from cloudai.master.tasks import TaskError
from cloudai.proto import pb, rpc
from cloudai.proto.tolerant import Undecodable
from cloudai.security.limiter import LogOnce
from cloudai.security.peers import PeerCertificates
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
    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        """(True, ...): the result is committed; (False, why): refused for good;
        ``TaskError("unavailable")``: not stored now, deliver it again."""
        ...


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
    results_not_stored: int = 0  # answered UNAVAILABLE: the store could not commit them
    refused_credentials: int = 0  # calls without the right certificate (secure mode)
    refused_duplicates: int = 0  # RegisterWorker for an id another live worker holds
    output_chunks: int = 0  # AppendTaskOutput calls answered (stored, trimmed or a gap)
    output_refused: int = 0  # AppendTaskOutput for a task that is not the caller's
    output_not_stored: int = 0  # answered UNAVAILABLE: the disk could not take it


Refusal = tuple[grpc.StatusCode, str]


class WorkerCertificates:
    """Secure mode's rule: the caller's certificate must be the one bound to the id it
    acts for. Pure apart from reading the peer's certificate from the context."""

    def __init__(self, registry: WorkerRegistry, peers: PeerCertificates | None = None) -> None:
        self._registry = registry
        self._peers = peers or PeerCertificates()

    def check(self, context: grpc.aio.ServicerContext, worker_id: str) -> Refusal | None:
        caller = self._peers.of(context)
        if caller is None:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "this master requires a worker certificate: join with a token "
                "(cloudai worker --join TOKEN)",
            )
        if caller.role != "worker" or caller.worker_id != worker_id:
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate of {caller.describe()} cannot act for worker {worker_id!r}",
            )
        if self._registry.certificate_of(worker_id) != caller.fingerprint:
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"worker {worker_id!r}'s certificate is no longer valid on this master "
                "(unregistered, or replaced by a newer join); join again with a new token",
            )
        return None


class RefusalLog:
    """Refused calls: one log line per peer a minute (saying how many were left out);
    the rest are counted."""

    def __init__(self, once: LogOnce | None = None) -> None:
        self._once = once or LogOnce(60.0)

    @property
    def suppressed(self) -> int:
        return self._once.suppressed_total

    def refused(self, peer: str, what: str, message: str) -> None:
        left_out = self._once.allow(peer)
        if left_out is None:
            return
        more = f" ({left_out} more refused since the last line)" if left_out else ""
        log.warning("refused %s from %s: %s%s", what, peer, message, more)


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
        certificates: WorkerCertificates | None = None,
        output: TaskOutputs | None = None,
    ) -> None:
        self._registry = registry
        self._telemetry = telemetry
        self._results = results
        self._certificates = certificates  # None: plaintext mode, no certificates
        self._output = output  # None: AppendTaskOutput is UNIMPLEMENTED
        self.refusals = RefusalLog()
        self._on_registered = on_registered
        self._on_heartbeat = on_heartbeat
        self._streams: set[asyncio.Task[object]] = set()
        self.stats = ServiceStats()

    def end_streams(self) -> None:
        """Shutdown: end open heartbeat streams now rather than after the grace period."""
        for task in self._streams:
            task.cancel()

    async def RegisterWorker(
        self, request: pb.WorkerInfo | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "RegisterWorker", request)
        try:
            validate_worker_info(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            return pb.RegisterAck(success=False, message=f"invalid WorkerInfo: {exc}")
        refusal = self._caller_refusal(context, "RegisterWorker", request.worker_id)
        if refusal is not None:
            await context.abort(*refusal)
        holder = self._live_holder(request)
        if holder is not None:
            self.stats.refused_duplicates += 1
            message = (
                f"worker id {request.worker_id!r} is in use by the live worker at {holder}; "
                "start this one with another --id, or stop that one first"
            )
            self.refusals.refused(context.peer(), "RegisterWorker", message)
            return pb.RegisterAck(success=False, message=message)
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

    async def _refuse_undecodable(
        self, context: grpc.aio.ServicerContext, what: str, request: Undecodable
    ) -> NoReturn:
        """A request that does not parse: INVALID_ARGUMENT, counted, logged once per peer
        a minute, never a traceback."""
        self.stats.invalid_messages += 1
        self.refusals.refused(context.peer(), what, request.describe())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        raise AssertionError("context.abort() returned")  # it raises

    def _caller_refusal(
        self, context: grpc.aio.ServicerContext, what: str, worker_id: str
    ) -> Refusal | None:
        if self._certificates is None:
            return None
        refusal = self._certificates.check(context, worker_id)
        if refusal is not None:
            self.stats.refused_credentials += 1
            self.refusals.refused(context.peer(), what, refusal[1])
        return refusal

    def _live_holder(self, info: pb.WorkerInfo) -> str | None:
        """Plaintext mode: the address of another live worker already holding this id.

        A worker that registers again from the address it holds (a restart, a new
        session) is the same worker; so is one that sends no address (the Go worker:
        the master keeps the admin's). Secure mode needs no such guess: the id's
        certificate says who it is."""
        if self._certificates is not None or not info.worker_ip:
            return None
        entry = self._registry.get(info.worker_id)
        if entry is None or not entry.session or entry.address == info.worker_ip:
            return None
        state = self._telemetry.get_worker_telemetry(info.worker_id)
        if state is None or not state.is_active:
            return None
        return entry.address or "an unknown address"

    async def SendHeartbeat(
        self, request: pb.Heartbeat | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "SendHeartbeat", request)
        refusal = self._caller_refusal(context, "SendHeartbeat", request.worker_id)
        if refusal is not None:
            await context.abort(*refusal)
        status, message = self._accept(request)
        if status is not None:
            await context.abort(status, message)
        return _HEARTBEAT_OK

    async def StreamHeartbeats(
        self,
        request_iterator: AsyncIterator[pb.Heartbeat | Undecodable],
        context: grpc.aio.ServicerContext,
    ) -> pb.HeartbeatAck:
        self.stats.streams_opened += 1
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        checked = ""  # the worker id whose certificate this stream has shown
        try:
            async for heartbeat in request_iterator:
                if isinstance(heartbeat, Undecodable):
                    await self._refuse_undecodable(context, "StreamHeartbeats", heartbeat)
                if self._certificates is not None and heartbeat.worker_id != checked:
                    refusal = self._caller_refusal(context, "StreamHeartbeats", heartbeat.worker_id)
                    if refusal is not None:
                        await context.abort(*refusal)
                    checked = heartbeat.worker_id
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

    # -- the synchronous server's path (master/sync_ingest.py) ---------------------------

    def admit(self, heartbeat: pb.Heartbeat | Undecodable, context: Any) -> bool:
        """On a gRPC thread: True when ``heartbeat`` is valid, from the certificate bound
        to its worker (secure mode) and its worker has a session, so it may be answered
        at once and handed to the event loop (``apply_admitted``). False: anything else,
        which the event loop's ``SendHeartbeat`` answers (and counts, and logs). Reads
        only; changes nothing."""
        if isinstance(heartbeat, Undecodable):
            return False
        try:
            validate_heartbeat(heartbeat)
        except InvalidMessage:
            return False
        worker_id = heartbeat.worker_id
        if self._certificates is not None and self._certificates.check(context, worker_id):
            return False
        return self._registry.has_session(worker_id)

    def apply_admitted(self, heartbeats: list[pb.Heartbeat]) -> None:
        """On the event loop: heartbeats ``admit`` let through, as ``SendHeartbeat`` would
        have applied them (a worker unregistered since is counted unknown, not applied)."""
        stats, registry, telemetry = self.stats, self._registry, self._telemetry
        on_heartbeat = self._on_heartbeat
        for heartbeat in heartbeats:
            worker_id = heartbeat.worker_id
            if not registry.has_session(worker_id):
                stats.heartbeats_unknown += 1
                continue
            stats.heartbeats += 1
            telemetry.process_heartbeat(heartbeat)
            if on_heartbeat is not None:
                on_heartbeat(worker_id)

    async def ReportTaskCompletion(
        self, request: pb.TaskResult | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "ReportTaskCompletion", request)
        try:
            validate_task_result(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid TaskResult: {exc}")
        refusal = self._caller_refusal(context, "ReportTaskCompletion", request.worker_id)
        if refusal is not None:
            await context.abort(*refusal)
        if request.worker_id not in self._registry:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, not_registered_message(request.worker_id)
            )
        # success=true only once the result is committed: the worker then deletes its
        # spooled copy. A store that cannot take it now is UNAVAILABLE (never
        # success=false, which tells the worker to set the result aside for good).
        try:
            ok, message = await self._results.record_result(request)
        except TaskError as exc:
            self.stats.results_not_stored += 1
            self.refusals.refused(context.peer(), "ReportTaskCompletion", str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if not ok:
            self.refusals.refused(context.peer(), "ReportTaskCompletion", message)
        self.stats.results += 1
        return pb.Ack(success=ok, message=message)

    async def AppendTaskOutput(
        self, request: pb.TaskOutput | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.TaskOutputAck:
        """A piece of a running task's output (docs/TASK_OUTPUT.md). Only the task's own
        worker may send it (secure mode: its certificate, as for results)."""
        if isinstance(request, Undecodable):
            await self._refuse_undecodable(context, "AppendTaskOutput", request)
        try:
            check_chunk(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            self.refusals.refused(context.peer(), "AppendTaskOutput", str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid TaskOutput: {exc}")
        refusal = self._caller_refusal(context, "AppendTaskOutput", request.worker_id)
        if refusal is not None:
            await context.abort(*refusal)
        if self._output is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this master keeps no task output")
        assert self._output is not None
        if request.worker_id not in self._registry:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, not_registered_message(request.worker_id)
            )
        try:
            ack = await self._output.append(request)
        except OutputRefused as exc:
            self.stats.output_refused += 1
            self.refusals.refused(context.peer(), "AppendTaskOutput", str(exc))
            return pb.TaskOutputAck(success=False, message=str(exc), next_offset=request.offset)
        except OutputUnavailable as exc:
            self.stats.output_not_stored += 1
            self.refusals.refused(context.peer(), "AppendTaskOutput", str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; send it again")
        self.stats.output_chunks += 1
        return ack
