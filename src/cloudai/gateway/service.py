"""The gateway's gRPC service: what a master serves to workers, answered by a gateway.

Heartbeats (unary ``SendHeartbeat`` and ``StreamHeartbeats``) are validated here with the
master's own ``validation.py``, checked against the sessions the master granted
(``SessionCache``; a worker the gateway has not seen is asked about once, over the bus)
and published on the bus; the answer does not wait for the master. ``RegisterWorker``,
``ReportTaskCompletion`` and ``AppendTaskOutput`` are forwarded to the master over the
bus (request/reply) with the caller's certificate, and answered with the master's
answer: a result is acknowledged only once the master has committed it.

Errors are the master's: INVALID_ARGUMENT for what does not validate or decode (one log
line per peer a minute), NOT_FOUND for a worker without a session (it registers again),
the master's refusals as they are; UNAVAILABLE when the master cannot be reached through
the bus (the worker retries, as with an unreachable master).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn

import grpc

from cloudai.bus.base import Bus, BusUnavailable, Delivery
from cloudai.bus.codec import (
    BusDecodeError,
    ForwardedCall,
    SessionEvent,
    decode_reply,
    decode_session_event,
    encode_call,
    encode_telemetry,
)
from cloudai.bus.subjects import Subjects
from cloudai.gateway.sessions import SessionCache, certificate_key
from cloudai.proto import pb, rpc
from cloudai.proto.tolerant import Undecodable
from cloudai.security.limiter import LogOnce
from cloudai.validation import InvalidMessage, validate_heartbeat, validate_worker_info

log = logging.getLogger(__name__)

_HEARTBEAT_OK = pb.HeartbeatAck(success=True)
_STATUS = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(slots=True)
class GatewayStats:
    heartbeats: int = 0  # published on the bus
    heartbeats_refused: int = 0  # NOT_FOUND / PERMISSION_DENIED from the session check
    invalid_messages: int = 0
    session_checks: int = 0  # Session calls to the master (workers not seen yet)
    calls_forwarded: int = 0
    bus_unavailable: int = 0  # answered UNAVAILABLE: the bus or the master did not answer
    streams_opened: int = 0
    streams_broken: int = 0


class GatewayService(rpc.MasterWorkerServicer):
    def __init__(
        self,
        gateway_id: str,
        bus: Bus,
        subjects: Subjects,
        sessions: SessionCache,
        *,
        call_timeout: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.gateway_id = gateway_id
        self._bus = bus
        self._subjects = subjects
        self._sessions = sessions
        self._call_timeout = call_timeout
        self._wall_clock = wall_clock
        self._once = LogOnce(60.0)
        self._streams: set[asyncio.Task[object]] = set()
        self.stats = GatewayStats()

    def end_streams(self) -> None:
        """Shutdown: end open heartbeat streams now (their workers move to another gateway)."""
        for task in self._streams:
            task.cancel()

    async def on_session_event(self, msg: Delivery) -> None:
        """The master's session events: forget one worker, or (it restarted) every one."""
        try:
            event = decode_session_event(msg.data)
        except BusDecodeError:
            self.stats.invalid_messages += 1
            return
        self.session_event(event)

    def session_event(self, event: SessionEvent) -> None:
        """Apply a decoded session event to the sessions (a removed worker is forgotten)."""
        forget = event.removed if event.removed is not None else event.forget
        if forget is not None:
            self._sessions.forget(forget)
        elif event.reset is not None and self._sessions.reset(event.reset):
            log.info("the master restarted: every worker's session is checked again")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _certificate(context: grpc.aio.ServicerContext) -> bytes:
        """The caller's client certificate (PEM) as TLS verified it; b"" in plaintext mode."""
        pems = context.auth_context().get("x509_pem_cert", ())
        return next(iter(pems), b"")

    def _refused(self, peer: str, what: str, message: str) -> None:
        left_out = self._once.allow(peer)
        if left_out is None:
            return
        more = f" ({left_out} more refused since the last line)" if left_out else ""
        log.warning("refused %s from %s: %s%s", what, peer, message, more)

    async def _abort_undecodable(
        self, context: grpc.aio.ServicerContext, what: str, request: Undecodable
    ) -> NoReturn:
        self.stats.invalid_messages += 1
        self._refused(context.peer(), what, request.describe())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
        raise AssertionError("context.abort() returned")

    async def _call(
        self, method: str, payload: bytes, cert: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Forward a call to the master; its answer's bytes, or abort with its status."""
        call = ForwardedCall(f"gateway {self.gateway_id} for {context.peer()}", cert, payload)
        try:
            data = await self._bus.request(
                self._subjects.rpc(method), encode_call(call), self._call_timeout
            )
            reply = decode_reply(data)
        except (BusUnavailable, BusDecodeError) as exc:
            self.stats.bus_unavailable += 1
            self._refused("bus", method, str(exc))
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the master cannot be reached through gateway {self.gateway_id}: {exc}",
            )
            raise AssertionError("context.abort() returned") from None
        if not reply.ok:
            await context.abort(_STATUS.get(reply.code, grpc.StatusCode.UNKNOWN), reply.details)
        return reply.payload

    # -- RPCs ------------------------------------------------------------------------------

    async def RegisterWorker(
        self, request: pb.WorkerInfo | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAck:
        if isinstance(request, Undecodable):
            await self._abort_undecodable(context, "RegisterWorker", request)
        try:
            validate_worker_info(request)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            return pb.RegisterAck(success=False, message=f"invalid WorkerInfo: {exc}")
        cert = self._certificate(context)
        self.stats.calls_forwarded += 1
        ack = pb.RegisterAck.FromString(
            await self._call("RegisterWorker", request.SerializeToString(), cert, context)
        )
        if ack.success:
            self._sessions.grant(request.worker_id, certificate_key(cert))
        return ack

    async def SendHeartbeat(
        self, request: pb.Heartbeat | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatAck:
        if isinstance(request, Undecodable):
            await self._abort_undecodable(context, "SendHeartbeat", request)
        cert = self._certificate(context)
        await self._accept(request, cert, certificate_key(cert), context)
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
        cert = self._certificate(context)  # one TLS session: one certificate
        cert_key = certificate_key(cert)
        try:
            async for heartbeat in request_iterator:
                if isinstance(heartbeat, Undecodable):
                    await self._abort_undecodable(context, "StreamHeartbeats", heartbeat)
                await self._accept(heartbeat, cert, cert_key, context)
        except grpc.aio.AbortError:
            raise
        except Exception:
            self.stats.streams_broken += 1
            raise
        finally:
            self._streams.discard(task)
        return _HEARTBEAT_OK

    async def _accept(
        self,
        heartbeat: pb.Heartbeat,
        cert: bytes,
        cert_key: str,
        context: grpc.aio.ServicerContext,
    ) -> None:
        try:
            validate_heartbeat(heartbeat)
        except InvalidMessage as exc:
            self.stats.invalid_messages += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid heartbeat: {exc}")
        worker_id = heartbeat.worker_id
        if not self._sessions.holds(worker_id, cert_key):
            # A worker this gateway has not seen (it moved here, or the master forgot it):
            # the master says whether it holds a session, with this certificate.
            self.stats.session_checks += 1
            try:
                await self._call("Session", worker_id.encode(), cert, context)
            except grpc.aio.AbortError:
                self.stats.heartbeats_refused += 1
                raise
            self._sessions.grant(worker_id, cert_key)
        try:
            await self._bus.publish(
                self._subjects.telemetry(worker_id),
                encode_telemetry(heartbeat.SerializeToString(), self._wall_clock()),
            )
        except BusUnavailable as exc:
            self.stats.bus_unavailable += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"gateway {self.gateway_id}: {exc}")
        self.stats.heartbeats += 1

    async def ReportTaskCompletion(
        self, request: pb.TaskResult | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        if isinstance(request, Undecodable):
            await self._abort_undecodable(context, "ReportTaskCompletion", request)
        self.stats.calls_forwarded += 1
        payload = await self._call(
            "ReportTaskCompletion",
            request.SerializeToString(),
            self._certificate(context),
            context,
        )
        return pb.Ack.FromString(payload)

    async def AppendTaskOutput(
        self, request: pb.TaskOutput | Undecodable, context: grpc.aio.ServicerContext
    ) -> pb.TaskOutputAck:
        if isinstance(request, Undecodable):
            await self._abort_undecodable(context, "AppendTaskOutput", request)
        self.stats.calls_forwarded += 1
        payload = await self._call(
            "AppendTaskOutput", request.SerializeToString(), self._certificate(context), context
        )
        return pb.TaskOutputAck.FromString(payload)
