"""The master's side of the bus (``--bus``): telemetry from gateways, and the calls they
forward (docs/SCALING.md).

Telemetry: every ``<prefix>.telemetry.<worker>`` message is a heartbeat a gateway has
validated (the same ``validation.py``) and acknowledged to its worker; it goes to the
same ``TelemetryManager.process_heartbeat`` as a heartbeat that came over gRPC, after
the same session check. A heartbeat for a worker without a session is dropped, counted,
and answered with a ``forget`` session event, so that the gateway asks again and its
worker gets NOT_FOUND and registers again, as with the master itself.

Calls: ``RegisterWorker``, ``ReportTaskCompletion`` and ``AppendTaskOutput`` are run by
the master's own ``MasterService`` handlers, with a context that carries the caller's
certificate as the gateway received it: identity rules, validation, commit-before-ack
and the answers are the master's, unchanged. ``Session`` answers whether a worker (with
that certificate) holds a session; a gateway asks it once per worker it has not seen.
``ApiTokens`` answers with the API tokens' records (the hashes of their secrets, never a
secret, never a join token) for gateways that check tokens on their WebSockets.

Registry changes that end a session (a new certificate) are published as ``forget``
events, an unregistered worker as ``removed`` (gateways forget its session and drop it
from their WebSockets); a made or revoked API token as ``tokens`` (gateways fetch the
tokens again); at start the master publishes ``reset`` (gateways forget every session:
this master has none yet).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from cloudai.bus.base import Bus, BusUnavailable, Delivery
from cloudai.bus.codec import (
    BusDecodeError,
    CallReply,
    ForwardedCall,
    SessionEvent,
    decode_call,
    decode_telemetry,
    encode_api_tokens,
    encode_reply,
    encode_session_event,
)
from cloudai.bus.subjects import FORWARDED_METHODS, MASTER_QUEUE, Subjects
from cloudai.master.access import AccessControl
from cloudai.master.registry import WorkerEntry, WorkerRegistry
from cloudai.master.service import MasterService, WorkerCertificates, not_registered_message
from cloudai.proto import pb
from cloudai.proto.tolerant import tolerant
from cloudai.telemetry.manager import TelemetryManager

log = logging.getLogger(__name__)

_REQUESTS = {
    "RegisterWorker": tolerant(pb.WorkerInfo),
    "ReportTaskCompletion": tolerant(pb.TaskResult),
    "AppendTaskOutput": tolerant(pb.TaskOutput),
}
FORGET_EVERY = 1.0  # seconds: at most one forget event per worker this often


class CallAborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ForwardedContext:
    """What ``MasterService``'s handlers use of a gRPC servicer context, for a call a
    gateway forwarded: the peer, the caller's certificate, abort."""

    __slots__ = ("_call",)

    def __init__(self, call: ForwardedCall) -> None:
        self._call = call

    def peer(self) -> str:
        return self._call.peer

    def auth_context(self) -> Mapping[str, list[bytes]]:
        cert = self._call.certificate
        return {"x509_pem_cert": [cert]} if cert else {}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise CallAborted(code, details)


def status_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


@dataclass(slots=True)
class BusIngestStats:
    heartbeats: int = 0  # applied (also counted in the service's heartbeats)
    heartbeats_unknown: int = 0  # no session: dropped, gateway told to forget
    invalid: int = 0  # bytes that were not a telemetry message / a Heartbeat
    calls: int = 0
    call_errors: int = 0  # calls answered with a non-OK status
    forget_events: int = 0
    removed_events: int = 0  # workers unregistered
    token_events: int = 0  # API tokens made or revoked


class BusIngest:
    def __init__(
        self,
        bus: Bus,
        subjects: Subjects,
        registry: WorkerRegistry,
        telemetry: TelemetryManager,
        service: MasterService,
        certificates: WorkerCertificates | None,
        access: AccessControl | None = None,
    ) -> None:
        self.bus = bus
        self.subjects = subjects
        self._registry = registry
        self._telemetry = telemetry
        self._service = service
        self._certificates = certificates
        self._access = access  # None (--insecure): no API tokens to hand out
        self.boot_id = uuid.uuid4().hex
        self.stats = BusIngestStats()
        self._calls: set[asyncio.Task[None]] = set()
        self._events: set[asyncio.Task[None]] = set()
        self._forgotten: dict[str, float] = {}
        self._running = False

    async def start(self) -> None:
        await self.bus.connect()
        try:
            await self.bus.subscribe(self.subjects.telemetry_all, self._on_telemetry)
            for method in FORWARDED_METHODS:
                await self.bus.subscribe(
                    self.subjects.rpc(method), self._call_handler(method), queue=MASTER_QUEUE
                )
            self._running = True
            self._registry.add_listener(self._registry_changed)
            if self._access is not None:
                self._access.add_api_listener(self._tokens_changed)
            await self.bus.publish(
                self.subjects.sessions, encode_session_event(SessionEvent(reset=self.boot_id))
            )
        except BaseException:
            await self.bus.close()
            raise
        log.info("bus: consuming telemetry and calls on %s.*", self.subjects.prefix)

    async def stop(self) -> None:
        self._running = False
        for task in list(self._calls):
            task.cancel()
        await asyncio.gather(*self._calls, *self._events, return_exceptions=True)
        await self.bus.close()

    # -- telemetry ---------------------------------------------------------------------------

    async def _on_telemetry(self, msg: Delivery) -> None:
        try:
            _received_at, raw = decode_telemetry(msg.data)
            heartbeat = pb.Heartbeat.FromString(raw)
        except (BusDecodeError, DecodeError):
            self.stats.invalid += 1
            return
        worker_id = heartbeat.worker_id
        if not self._registry.has_session(worker_id):
            self.stats.heartbeats_unknown += 1
            self._service.stats.heartbeats_unknown += 1
            self._forget(worker_id)
            return
        self.stats.heartbeats += 1
        self._service.stats.heartbeats += 1
        self._telemetry.process_heartbeat(heartbeat)

    # -- sessions ----------------------------------------------------------------------------

    def _registry_changed(self, worker_id: str, entry: WorkerEntry | None) -> None:
        if entry is None:  # unregistered: its session is gone, and so is the worker
            if self._running:
                self.stats.removed_events += 1
                self._send_event(SessionEvent(removed=worker_id))
        elif not entry.session:
            self._forget(worker_id, force=True)

    def _tokens_changed(self, token_id: str) -> None:
        if self._running:
            self.stats.token_events += 1
            self._send_event(SessionEvent(tokens=token_id))

    def _forget(self, worker_id: str, *, force: bool = False) -> None:
        if not self._running:
            return
        if not force:  # a heartbeat without a session: once a second per worker at most
            now = time.monotonic()
            if now - self._forgotten.get(worker_id, -FORGET_EVERY) < FORGET_EVERY:
                return
            if len(self._forgotten) > 100_000:
                self._forgotten.clear()
            self._forgotten[worker_id] = now
        self.stats.forget_events += 1
        self._send_event(SessionEvent(forget=worker_id))

    def _send_event(self, event: SessionEvent) -> None:
        data = encode_session_event(event)
        task = asyncio.get_running_loop().create_task(self._publish_event(data))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _publish_event(self, data: bytes) -> None:
        try:
            await self.bus.publish(self.subjects.sessions, data)
        except BusUnavailable as exc:
            log.debug("bus: session event not sent: %s", exc)

    # -- calls -------------------------------------------------------------------------------

    def _call_handler(self, method: str) -> Any:
        async def handle(msg: Delivery) -> None:
            # Each call in its own task: a result waits for its commit, and nothing else
            # waits behind it.
            task = asyncio.get_running_loop().create_task(self._answer(method, msg))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

        return handle

    async def _answer(self, method: str, msg: Delivery) -> None:
        self.stats.calls += 1
        try:
            call = decode_call(msg.data)
        except BusDecodeError as exc:
            reply = CallReply(status_number(grpc.StatusCode.INVALID_ARGUMENT), str(exc), b"")
        else:
            reply = await self.dispatch(method, call)
        if not reply.ok:
            self.stats.call_errors += 1
        if msg.reply:
            try:
                await self.bus.publish(msg.reply, encode_reply(reply))
            except BusUnavailable as exc:
                log.debug("bus: reply to %s lost: %s", method, exc)

    async def dispatch(self, method: str, call: ForwardedCall) -> CallReply:
        """Run a forwarded call; its answer as a reply (pure of the bus: tests call it)."""
        context = ForwardedContext(call)
        try:
            if method == "Session":
                return self._session(call.payload.decode(errors="replace"), context)
            if method == "ApiTokens":
                return self._api_tokens()
            request = _REQUESTS[method](call.payload)
            handler = getattr(self._service, method)
            response = await handler(request, context)
        except CallAborted as exc:
            return CallReply(status_number(exc.code), exc.details, b"")
        return CallReply(0, "", response.SerializeToString())

    def _api_tokens(self) -> CallReply:
        if self._access is None:
            return CallReply(
                status_number(grpc.StatusCode.FAILED_PRECONDITION),
                "this master runs --insecure: it has no API tokens (run the gateway with "
                "--insecure too, or the master without)",
                b"",
            )
        return CallReply(0, "", encode_api_tokens(self._access.api_token_records()))

    def _session(self, worker_id: str, context: ForwardedContext) -> CallReply:
        if self._certificates is not None:
            refusal = self._certificates.check(context, worker_id)  # type: ignore[arg-type]
            if refusal is not None:
                self._service.stats.refused_credentials += 1
                self._service.refusals.refused(context.peer(), "heartbeats", refusal[1])
                return CallReply(status_number(refusal[0]), refusal[1], b"")
        if not self._registry.has_session(worker_id):
            self._service.stats.heartbeats_unknown += 1
            return CallReply(
                status_number(grpc.StatusCode.NOT_FOUND), not_registered_message(worker_id), b""
            )
        return CallReply(0, "", b"")
