"""WorkerLink: the master's calls to workers (MasterRegister, AssignTask, CancelTask).

One cached grpc.aio channel per worker address. MasterRegister tells a worker where its
master is; a worker that learned its master only that way (the Go worker; ``cloudai
worker`` without ``--master``) depends on it. The master calls it:

- when an admin runs ``register`` (``connect``): always, even for a worker that holds a
  session (re-announcing is how an admin rejoins a worker that lost its master);
- at start (``rejoin``): on every stored worker with an address, so that a restarted
  master calls its workers back with nobody acting.

Either way it calls until the worker registers (a new session) or is removed: with
back-off while the worker is unreachable (the existing master tried once; a worker
started later never heard from it), and again when it answered but did not register (a
Go worker tries RegisterWorker once). At most ``max_concurrent_calls`` calls are in
flight at once. In secure mode the calls
carry the master's certificate, which is all a worker accepts them with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

import grpc

from cloudai.addresses import is_wildcard, join_host_port, local_address_towards, split_host_port
from cloudai.backoff import Backoff
from cloudai.master.registry import WorkerRegistry
from cloudai.proto import pb, rpc
from cloudai.security.pki import worker_dns_name

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0
MAX_CONCURRENT_CALLS = 32
"""MasterRegister calls in flight at once (a restart with thousands of stored workers)."""
REGISTER_WAIT = 1.0
"""Seconds a worker that answered MasterRegister has to register before it is called again."""
MAX_UNREGISTERED_ANSWERS = 8
"""Answers without a registration after which the master stops calling a worker."""


class WorkerUnavailable(RuntimeError):
    pass


class RejoinRound:
    """The start-up recovery's first pass: how each worker first answered. ``done`` is
    set once every worker of the round has been called (or registered by itself);
    ``outcomes`` counts ``answered``, ``registered`` (by itself, before the call),
    ``retrying`` (not reachable yet: the calls go on with back-off), ``removed``,
    ``not callable`` (no address) and ``cancelled`` (the admin's register took over)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.outcomes: Counter[str] = Counter()
        self.done = asyncio.Event()

    def note(self, worker_id: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        log.debug("rejoin: worker %s %s", worker_id, outcome)
        if self.outcomes.total() == self.total:
            self.done.set()

    def describe(self) -> str:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(self.outcomes.items()))
        return f"{self.total} stored workers called back: {counts or 'none'}"


class WorkerLink:
    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        master_id: str,
        grpc_port: int,
        advertise_host: str | None,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
        max_concurrent_calls: int = MAX_CONCURRENT_CALLS,
        backoff: tuple[float, float] = (0.5, 15.0),
        register_wait: float = REGISTER_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``credentials``: the master's certificate for calls to workers (secure mode);
        None: plaintext, the Go protocol. ``backoff``: the first and the largest delay
        between MasterRegister retries."""
        self._registry = registry
        self._credentials = credentials
        self._master_id = master_id
        self.grpc_port = grpc_port
        self._advertise_host = advertise_host
        self._max_message_bytes = max_message_bytes
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._registering: dict[str, asyncio.Task[None]] = {}
        self._call_slots = asyncio.Semaphore(max_concurrent_calls)
        self._backoff_initial, self._backoff_max = backoff
        self._register_wait = register_wait
        self._sleep = sleep
        self._closed = False

    def master_address_for(self, worker_address: str) -> str:
        """An address of this master that the worker can reach (never a wildcard)."""
        host = self._advertise_host
        if not host or is_wildcard(host):
            worker_host, worker_port = split_host_port(worker_address)
            host = local_address_towards(worker_host, worker_port)
        return join_host_port(host, self.grpc_port)

    def _stub(self, worker_id: str, address: str) -> rpc.MasterWorkerStub:
        key = (worker_id, address)
        channel = self._channels.get(key)
        if channel is None:
            options: list[tuple[str, int | str]] = [
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
            ]
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=options)
            else:  # only this worker's certificate names it: not another worker's
                options.append(("grpc.ssl_target_name_override", worker_dns_name(worker_id)))
                channel = grpc.aio.secure_channel(address, self._credentials, options)
            self._channels[key] = channel
        return rpc.MasterWorkerStub(channel)

    def _address(self, worker_id: str) -> str:
        entry = self._registry.get(worker_id)
        if entry is None:
            raise WorkerUnavailable(f"unknown worker {worker_id!r}")
        if not entry.address:
            raise WorkerUnavailable(f"the address of worker {worker_id!r} is not known yet")
        return entry.address

    # -- MasterRegister ---------------------------------------------------------------------

    async def master_register(self, worker_id: str) -> tuple[bool, str]:
        """One MasterRegister call; (success, message)."""
        address = self._address(worker_id)
        info = pb.MasterInfo(
            master_id=self._master_id, master_address=self.master_address_for(address)
        )
        try:
            ack = await self._stub(worker_id, address).MasterRegister(info, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
        return ack.success, ack.message

    def connect(self, worker_id: str) -> None:
        """Announce this master to the worker (the admin's ``register``): call its
        MasterRegister now, even when it holds a session, and again until it registers
        anew or is removed."""
        self._start(worker_id, self._registry.session_of(worker_id))

    def rejoin(self, worker_ids: Iterable[str]) -> RejoinRound:
        """Start-up recovery: call MasterRegister on each of ``worker_ids`` (in parallel,
        at most ``max_concurrent_calls`` calls at a time), and again until the worker
        registers. Workers that already hold a session, or whose registration is already
        under way, are left alone."""
        todo = [
            worker_id
            for worker_id in worker_ids
            if not self._closed
            and not self._registry.has_session(worker_id)
            and not self._registering_now(worker_id)
        ]
        round_ = RejoinRound(len(todo))
        for worker_id in todo:
            self._start(worker_id, None, round_)
        if not todo:
            round_.done.set()
        return round_

    def _registering_now(self, worker_id: str) -> bool:
        task = self._registering.get(worker_id)
        return task is not None and not task.done()

    def _start(
        self, worker_id: str, baseline: int | None, round_: RejoinRound | None = None
    ) -> None:
        if self._closed:
            return
        task = self._registering.get(worker_id)
        if task is not None and not task.done():
            task.cancel()
        self._registering[worker_id] = asyncio.get_running_loop().create_task(
            self._call_until_registered(worker_id, baseline, round_),
            name=f"master-register-{worker_id}",
        )

    def _registered_anew(self, worker_id: str, baseline: int | None) -> bool:
        session = self._registry.session_of(worker_id)
        return session is not None and session != baseline

    async def _call_until_registered(
        self, worker_id: str, baseline: int | None, round_: RejoinRound | None
    ) -> None:
        """Call MasterRegister until the worker holds a session newer than ``baseline``
        (it registered), or is removed. An answer alone is not enough: a worker whose one
        RegisterWorker failed (the Go worker tries once) is called again after
        ``register_wait``, up to ``MAX_UNREGISTERED_ANSWERS`` answers; an unreachable one
        with back-off, for as long as it is authorised."""
        backoff = Backoff(initial=self._backoff_initial, maximum=self._backoff_max)
        # Start-up recovery reports per worker at debug level and sums up in one line
        # (thousands of stored workers); the admin's register reports each.
        say = log.debug if round_ is not None else log.info
        reported = False
        answers = 0
        outcome = "cancelled"  # replaced by the admin's register, or the master stops
        try:
            while worker_id in self._registry:
                if self._registered_anew(worker_id, baseline):
                    outcome = "registered"
                    return
                if answers >= MAX_UNREGISTERED_ANSWERS:
                    log.warning(
                        "worker %s answered MasterRegister %d times but did not register;"
                        " not calling it again (see its log)",
                        worker_id,
                        answers,
                    )
                    return
                try:
                    async with self._call_slots:
                        ok, message = await self.master_register(worker_id)
                except WorkerUnavailable as exc:
                    log.info("not calling MasterRegister: %s", exc)
                    outcome = "not callable"
                    return
                if round_ is not None:
                    outcome = "answered" if ok else "retrying"
                    round_.note(worker_id, outcome)
                    round_ = None  # counted once, on its first answer
                if ok:
                    answers += 1
                    if answers == 1:
                        say("worker %s answered MasterRegister: %s", worker_id, message)
                    await self._sleep(max(self._register_wait, backoff.next_delay()))
                    continue
                if not reported:
                    say("worker %s not reachable yet (%s); retrying", worker_id, message)
                    reported = True
                await self._sleep(backoff.next_delay())
            outcome = "removed"
        finally:
            if round_ is not None:
                round_.note(worker_id, outcome)

    # -- tasks ------------------------------------------------------------------------------

    async def assign_task(self, worker_id: str, task: pb.Task) -> pb.TaskAck:
        return await self._call(worker_id, "AssignTask", task)

    async def cancel_task(self, worker_id: str, task_id: str) -> pb.TaskAck:
        return await self._call(worker_id, "CancelTask", pb.TaskID(task_id=task_id))

    async def _call(self, worker_id: str, method: str, request: object) -> pb.TaskAck:
        stub = self._stub(worker_id, self._address(worker_id))
        try:
            ack: pb.TaskAck = await getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise WorkerUnavailable(
                f"worker {worker_id} did not answer {method}: {exc.code().name}: {exc.details()}"
            ) from None
        return ack

    async def cancel_registrations(self) -> None:
        """Stop calling MasterRegister (start-up recovery and the admin's registrations)."""
        tasks = list(self._registering.values())
        self._registering.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        self._closed = True
        await self.cancel_registrations()
        await asyncio.gather(*(ch.close() for ch in self._channels.values()))
        self._channels.clear()
