"""MasterClient: the worker's side of the worker -> master RPCs.

One persistent ``grpc.aio`` channel per master address, with keepalive and a
reconnect back-off capped like ours. A session task registers (RegisterWorker,
retried with back-off while the master refuses; each distinct refusal message is
logged once), then heartbeats every interval:

- over ``StreamHeartbeats`` when the master offers it; ``UNIMPLEMENTED`` switches to
  unary ``SendHeartbeat`` for the rest of this channel's life;
- an unreachable master: retries back off (full jitter, capped) and resume by
  themselves; a broken stream is reopened;
- ``NOT_FOUND`` (the master no longer knows our session, e.g. it restarted): register
  again and go on.

A second task delivers spooled results (ReportTaskCompletion) whenever registered,
and deletes each only after the master acked it. The answers: ``success=true`` means
the master has COMMITTED the result to its store (write-ahead: a master killed right
after still has it), so the spooled copy is deleted; an RPC error (the master is gone,
or ``UNAVAILABLE``: its store could not take the result now) keeps it spooled and
retries with back-off; ``success=false`` (a result this master never issued to us)
sets it aside in ``rejected/``, never deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc

from cloudai.backoff import Backoff
from cloudai.proto import pb, rpc
from cloudai.security.pki import MASTER_DNS
from cloudai.worker.results_spool import ResultSpool
from cloudai.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class _End(Enum):
    STOPPED = "stopped"
    NOT_FOUND = "not found"
    UNIMPLEMENTED = "unimplemented"
    ERROR = "error"


@dataclass(slots=True)
class ClientStats:
    registrations: int = 0
    registration_refusals: int = 0
    reregistrations: int = 0
    heartbeats_sent: int = 0
    heartbeat_failures: int = 0
    streams_opened: int = 0
    unary_fallbacks: int = 0
    results_delivered: int = 0
    result_failures: int = 0


def channel_options(settings: WorkerSettings) -> list[tuple[str, int | str]]:
    backoff_ms = int(settings.backoff_initial * 1000)
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC's own reconnect back-off defaults to 120 s: we would resume that late.
        ("grpc.initial_reconnect_backoff_ms", backoff_ms),
        ("grpc.min_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_reconnect_backoff_ms", int(settings.heartbeat_backoff_max * 1000)),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome, so asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


class MasterClient:
    def __init__(
        self,
        settings: WorkerSettings,
        worker_info: Callable[[str], pb.WorkerInfo],
        heartbeat: Callable[[], Awaitable[pb.Heartbeat]],
        spool: ResultSpool,
        rng: Callable[[], float] = random.random,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``worker_info(master_address)`` builds RegisterWorker's message (worker_ip
        must be reachable from that master); ``heartbeat()`` samples one heartbeat."""
        self.settings = settings
        self._credentials = credentials  # None: plaintext (the Go protocol)
        self._worker_info = worker_info
        self._heartbeat = heartbeat
        self._spool = spool
        self._rng = rng
        self.stats = ClientStats()
        self.master_address: str | None = None
        self.stream_supported: bool | None = None  # None: not tried on this channel yet
        self._channel: grpc.aio.Channel | None = None
        self._channel_address: str | None = None
        self._registered = asyncio.Event()
        self._registered_at = 0.0
        self._changed = asyncio.Event()  # a new master address, or re-register now
        self._stopping = asyncio.Event()  # heartbeats stop
        self._deliver_wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._closed = False
        self._outage_logged = False
        self._undelivered: set[str] = set()  # failures already logged, per task
        # Awaited before each result is delivered (the live output flushes the task's
        # output first: docs/TASK_OUTPUT.md).
        self.before_result: Callable[[pb.TaskResult], Awaitable[None]] | None = None

    # -- public -----------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    @property
    def master_known(self) -> bool:
        return self.master_address is not None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._main = loop.create_task(self._run(), name="master-session")
        self._deliverer = loop.create_task(self._deliver_loop(), name="result-delivery")
        self._deliver_wake.set()

    def set_master(self, address: str) -> None:
        """Use ``address`` from now on and (re-)register there at once."""
        if address != self.master_address:
            log.info("master address: %s", address)
        self.master_address = address
        self._registered.clear()
        self._changed.set()

    def notify_result(self, _result: object = None) -> None:
        """A result was spooled: deliver it when possible."""
        self._deliver_wake.set()

    async def append_output(self, chunk: pb.TaskOutput) -> pb.TaskOutputAck:
        """One AppendTaskOutput to the registered master; ConnectionError while there is
        none, the RPC's error when it fails."""
        if not self._registered.is_set() or self._channel is None:
            raise ConnectionError("not registered with a master")
        stub = rpc.MasterWorkerStub(self._channel)
        ack: pb.TaskOutputAck = await stub.AppendTaskOutput(
            chunk, timeout=self.settings.rpc_timeout
        )
        return ack

    async def wait_registered(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._registered.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop_heartbeats(self, timeout: float = 5.0) -> None:
        """End heartbeats (a stream is closed cleanly); delivery goes on until close()."""
        self._stopping.set()
        if self._main is not None and not self._main.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._main), timeout)
            except TimeoutError:
                self._main.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._main

    async def flush_results(self, timeout: float) -> int:
        """Shutdown: deliver every pending result now, within ``timeout`` s; returns how
        many are left (they stay on disk and are delivered after the next start).

        Stops the background delivery first and gives up at the first failure: a master
        that is unreachable now will not be back within a shutdown.
        """
        if self._deliverer is not None and not self._deliverer.done():
            self._deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deliverer
        deadline = time.monotonic() + timeout
        pending = await asyncio.to_thread(self._spool.pending)
        for result in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.registered or self._channel is None:
                break
            try:
                delivered = await asyncio.wait_for(self._deliver(result), remaining)
            except TimeoutError:
                break
            if not delivered:
                break
        return await asyncio.to_thread(len, self._spool)

    async def close(self) -> None:
        self._closed = True
        self._stopping.set()
        for task in (self._main, self._deliverer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._close_channel()

    # -- channel ----------------------------------------------------------------------------

    async def _stub(self, address: str) -> rpc.MasterWorkerStub:
        """The stub of the one channel to ``address`` (a new master: a new channel)."""
        if self._channel is None or self._channel_address != address:
            await self._close_channel()
            options = channel_options(self.settings)
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(address, options=options)
            else:  # the master's certificate must name it: another worker's would not
                options.append(("grpc.ssl_target_name_override", MASTER_DNS))
                self._channel = grpc.aio.secure_channel(address, self._credentials, options)
            self._channel_address = address
            self.stream_supported = None
        return rpc.MasterWorkerStub(self._channel)

    async def _close_channel(self) -> None:
        channel, self._channel, self._channel_address = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _sleep(self, delay: float) -> bool:
        """Sleep unless heartbeats stop first; True when they stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return self._stopping.is_set()

    # -- session ----------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = Backoff(
            self.settings.backoff_initial, self.settings.heartbeat_backoff_max, rng=self._rng
        )
        while not self._stopping.is_set():
            address = self.master_address
            self._changed.clear()
            if address is None:
                await self._until_changed_or_stopped()
                continue
            session = asyncio.ensure_future(self._session(address))
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({session, changed}, return_when=asyncio.FIRST_COMPLETED)
            for task in (session, changed):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if session.done() and not session.cancelled() and session.exception() is not None:
                log.error("master session failed", exc_info=session.exception())
                await self._sleep(failures.next_delay())

    async def _until_changed_or_stopped(self) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (changed, stopping):
            task.cancel()

    async def _session(self, address: str) -> None:
        stub = await self._stub(address)
        quick_rejections = Backoff(
            self.settings.backoff_initial, self.settings.heartbeat_backoff_max, rng=self._rng
        )
        while not self._stopping.is_set():
            if not self._registered.is_set() and not await self._register(stub, address):
                return  # stopping
            end = await self._heartbeats(stub, address)
            if end is _End.STOPPED:
                return
            # NOT_FOUND: the master forgot our session. Register again, but do not spin
            # if it keeps forgetting at once.
            self._registered.clear()
            self.stats.reregistrations += 1
            log.warning("master %s no longer knows this worker; registering again", address)
            if time.monotonic() - self._registered_at < self.settings.heartbeat_interval:
                if await self._sleep(quick_rejections.next_delay()):
                    return
            else:
                quick_rejections.reset()

    async def _register(self, stub: rpc.MasterWorkerStub, address: str) -> bool:
        backoff = Backoff(
            self.settings.backoff_initial, self.settings.register_backoff_max, rng=self._rng
        )
        reported: set[str] = set()
        while not self._stopping.is_set():
            info = self._worker_info(address)
            try:
                ack = await stub.RegisterWorker(info, timeout=self.settings.rpc_timeout)
            except grpc.aio.AioRpcError as exc:
                message = f"master {address} unreachable ({_describe(exc)})"
            else:
                if ack.success:
                    self.stats.registrations += 1
                    self._registered_at = time.monotonic()
                    self._registered.set()
                    self._deliver_wake.set()
                    self._outage_logged = False
                    log.info(
                        "registered with master %s as %s (%s): %s",
                        address,
                        info.worker_id,
                        info.worker_ip,
                        ack.message,
                    )
                    return True
                self.stats.registration_refusals += 1
                message = f"master {address} refused the registration: {ack.message}"
            if message not in reported:
                reported.add(message)
                log.warning("%s; retrying with back-off", message)
            else:
                log.debug("%s", message)
            if await self._sleep(backoff.next_delay()):
                break
        return False

    async def _heartbeats(self, stub: rpc.MasterWorkerStub, address: str) -> _End:
        backoff = Backoff(
            self.settings.backoff_initial, self.settings.heartbeat_backoff_max, rng=self._rng
        )
        while not self._stopping.is_set():
            if self.settings.use_stream and self.stream_supported is not False:
                end = await self._stream(stub, backoff)
            else:
                end = await self._unary(stub, backoff)
            if end is _End.UNIMPLEMENTED:
                self.stream_supported = False
                self.stats.unary_fallbacks += 1
                log.info("master %s has no StreamHeartbeats; using SendHeartbeat", address)
                continue
            if end is not _End.ERROR:
                return end
            self.stats.heartbeat_failures += 1
            if await self._sleep(backoff.next_delay()):
                break
        return _End.STOPPED

    def _sent(self, backoff: Backoff) -> None:
        self.stats.heartbeats_sent += 1
        if backoff.attempts:
            log.info("heartbeats to master %s resumed", self.master_address)
        backoff.reset()
        self._outage_logged = False

    def _failed(self, exc: BaseException) -> _End:
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                return _End.NOT_FOUND
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return _End.UNIMPLEMENTED
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "heartbeat to master %s failed (%s); retrying with back-off",
                self.master_address,
                _describe(exc),
            )
        return _End.ERROR

    async def _unary(self, stub: rpc.MasterWorkerStub, backoff: Backoff) -> _End:
        while not self._stopping.is_set():
            heartbeat = await self._heartbeat()
            try:
                await stub.SendHeartbeat(heartbeat, timeout=self.settings.rpc_timeout)
            except grpc.aio.AioRpcError as exc:
                return self._failed(exc)
            self._sent(backoff)
            if await self._sleep(self.settings.heartbeat_interval):
                break
        return _End.STOPPED

    async def _stream(self, stub: rpc.MasterWorkerStub, backoff: Backoff) -> _End:
        call = stub.StreamHeartbeats()
        self.stats.streams_opened += 1
        response: asyncio.Future[pb.HeartbeatAck] = asyncio.ensure_future(call)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set() and not response.done():
                heartbeat = await self._heartbeat()
                write = asyncio.ensure_future(call.write(heartbeat))
                done, _ = await asyncio.wait(
                    {write, response},
                    timeout=self.settings.rpc_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if write not in done:
                    write.cancel()
                    write.add_done_callback(_consume)
                    if response.done():
                        break
                    call.cancel()  # the master stopped reading
                    return self._failed(TimeoutError("heartbeat stream write timed out"))
                if write.exception() is not None:
                    break  # the call ended: its status is in `response`
                self._sent(backoff)
                await asyncio.wait(
                    {response, stopping},
                    timeout=self.settings.heartbeat_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if self._stopping.is_set() and not response.done():
                with contextlib.suppress(Exception):
                    await call.done_writing()
                    await asyncio.wait_for(asyncio.shield(response), self.settings.rpc_timeout)
                return _End.STOPPED
            try:
                await response
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return self._failed(exc)
            return self._failed(ConnectionError("the master ended the heartbeat stream"))
        finally:
            stopping.cancel()
            if not response.done():
                call.cancel()
                response.cancel()
            with contextlib.suppress(BaseException):
                await response

    # -- results ----------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        backoff = Backoff(
            self.settings.backoff_initial, self.settings.register_backoff_max, rng=self._rng
        )
        while not self._closed:
            await self._deliver_wake.wait()
            self._deliver_wake.clear()
            while self._registered.is_set() and self._channel is not None:
                pending = await asyncio.to_thread(self._spool.pending)
                if not pending:
                    break
                retry = False
                for result in pending:
                    if not self._registered.is_set():
                        break
                    if not await self._deliver(result):
                        retry = True
                if retry:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._deliver_wake.wait(), backoff.next_delay())
                    self._deliver_wake.clear()
                else:
                    backoff.reset()

    async def _deliver(self, result: pb.TaskResult) -> bool:
        """One ReportTaskCompletion; True when the result is settled (acked or set aside)."""
        if self.before_result is not None:
            await self.before_result(result)
        if self._channel is None:
            return False
        stub = rpc.MasterWorkerStub(self._channel)
        try:
            ack = await stub.ReportTaskCompletion(result, timeout=self.settings.rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            self.stats.result_failures += 1
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                log.error(
                    "master rejected the result of task %s for good (%s); kept in %s",
                    result.task_id,
                    _describe(exc),
                    self._spool.rejected_dir,
                )
                await asyncio.to_thread(self._spool.reject, result.task_id)
                return True
            level = logging.DEBUG if result.task_id in self._undelivered else logging.INFO
            self._undelivered.add(result.task_id)
            log.log(
                level,
                "result of task %s not delivered yet (%s); will retry",
                result.task_id,
                _describe(exc),
            )
            return False
        if not ack.success:
            # The master answered and said no: the result is not one it issued to us (a
            # task it never assigned, or assigned elsewhere). Retrying cannot change that;
            # keep it aside for a person to look at.
            self.stats.result_failures += 1
            log.warning(
                "master refused the result of task %s: %s; kept in %s",
                result.task_id,
                ack.message,
                self._spool.rejected_dir,
            )
            await asyncio.to_thread(self._spool.reject, result.task_id)
            self._undelivered.discard(result.task_id)
            return True
        # success=true: stored by the master (committed before it answered); only now
        # may the spooled copy go.
        await asyncio.to_thread(self._spool.remove, result.task_id, result.attempt)
        self._undelivered.discard(result.task_id)
        self.stats.results_delivered += 1
        log.info("result of task %s delivered (%s)", result.task_id, result.status)
        return True
