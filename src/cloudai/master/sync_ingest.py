"""The synchronous gRPC server's face (``grpc_server = "sync"``): unary calls on a pool of
gRPC threads, the master's state on its event loop.

Why: on the 2-core machine a unary call costs grpc.aio several times what it costs
grpcio's synchronous server, whose threads read, parse and answer a call without the
event loop (docs/PERFORMANCE.md, "Unary ingest at the Go master's pace"). The master's
state still has one owner, the event loop:

- ``SendHeartbeat``: the thread checks the heartbeat (``MasterService.admit``: valid, the
  caller's certificate, a session; reads only), answers it, and puts it in a
  ``HeartbeatHandoff``; the loop applies what waits in one callback
  (``MasterService.apply_admitted``): one ``call_soon_threadsafe`` per batch, not per
  heartbeat. When the loop falls ``MAX_PENDING`` heartbeats behind, calls are refused
  (UNAVAILABLE) instead of acknowledged (the aio server sheds them too, by cancelling).
  Anything ``admit`` does not let through (invalid, unknown worker, another's
  certificate, garbage) is answered by the loop's own handler, as on the aio server.
- ``RegisterWorker``, ``ReportTaskCompletion``, ``AppendTaskOutput``: the thread runs the
  loop's handler (``asyncio.run_coroutine_threadsafe``) and waits for its answer.
- ``StreamHeartbeats`` is not served (UNIMPLEMENTED): a stream would hold a pool thread
  for its whole life. Our workers then send unary heartbeats (worker/client.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc

from cloudai.master.service import MasterService
from cloudai.proto import pb
from cloudai.proto.tolerant import Undecodable

log = logging.getLogger(__name__)

_HEARTBEAT_OK = pb.HeartbeatAck(success=True)
# Heartbeats admitted but not yet applied by the event loop, at most (about a second of
# unary ingest on 2 cores); beyond it the loop is behind and calls are refused.
MAX_PENDING = 5000
BUSY = "the master is busy (its event loop is behind): send the heartbeat again later"
_T = TypeVar("_T")


class HeartbeatHandoff:
    """Items offered on any thread, applied on the event loop in batches.

    The first ``offer`` after a batch was taken schedules one ``apply`` on the loop
    (``call_soon_threadsafe``); the offers until that callback runs join its batch. The
    order of offers is kept. At most ``max_pending`` items wait: an event loop that falls
    behind makes ``offer`` return False (the caller refuses the call, so nothing is
    acknowledged that the master cannot take, and memory stays bounded). After ``close``
    (the loop is gone) offers are refused too."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        apply: Callable[[list[Any]], None],
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._loop = loop
        self._apply = apply
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._closed = False
        self.batches = 0  # callbacks scheduled on the loop
        self.refused = 0  # offers refused: the loop was behind, or gone

    def offer(self, item: Any) -> bool:
        with self._lock:
            pending = self._pending
            if self._closed or len(pending) >= self._max_pending:
                self.refused += 1
                return False
            pending.append(item)
            if len(pending) > 1:
                return True  # a callback is already scheduled for this batch
            self.batches += 1
        try:
            self._loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: the master is gone
            with self._lock:
                self._closed = True
                self.refused += len(self._pending)
                self._pending = []
            return False
        return True

    def _run(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self._apply(batch)

    def close(self) -> None:
        """Apply what waits now (on the loop's thread) and take no more."""
        with self._lock:
            self._closed = True
        self._run()


class SyncMasterServicer:
    """The worker -> master RPCs for a synchronous ``grpc.server`` (see the module's
    docstring). Handlers run on gRPC's threads; everything that changes the master runs
    on ``loop``."""

    def __init__(
        self,
        service: MasterService,
        handoff: HeartbeatHandoff,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._service = service
        self._handoff = handoff
        self._loop = loop

    def _on_loop(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run a handler of the aio service on the event loop and wait for its answer.
        ``context.abort`` raises there and the exception comes back here, to gRPC."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def SendHeartbeat(
        self, request: pb.Heartbeat | Undecodable, context: grpc.ServicerContext
    ) -> pb.HeartbeatAck:
        if self._service.admit(request, context):
            if self._handoff.offer(request):
                return _HEARTBEAT_OK
            context.abort(grpc.StatusCode.UNAVAILABLE, BUSY)  # raises
        return self._on_loop(self._service.SendHeartbeat(request, _aio(context)))

    def RegisterWorker(
        self, request: pb.WorkerInfo | Undecodable, context: grpc.ServicerContext
    ) -> pb.RegisterAck:
        return self._on_loop(self._service.RegisterWorker(request, _aio(context)))

    def ReportTaskCompletion(
        self, request: pb.TaskResult | Undecodable, context: grpc.ServicerContext
    ) -> pb.Ack:
        return self._on_loop(self._service.ReportTaskCompletion(request, _aio(context)))

    def AppendTaskOutput(
        self, request: pb.TaskOutput | Undecodable, context: grpc.ServicerContext
    ) -> pb.TaskOutputAck:
        return self._on_loop(self._service.AppendTaskOutput(request, _aio(context)))


def _aio(context: grpc.ServicerContext) -> Any:
    """The synchronous context where the aio service's handlers expect theirs: they only
    call ``peer()``, ``auth_context()`` and ``abort()``, which raises at once on both (so
    ``await context.abort(...)`` never reaches its ``await``)."""
    return context
