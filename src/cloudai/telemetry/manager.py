"""TelemetryManager: processes each worker's heartbeats off the RPC path.

One asyncio task per registered worker, fed through a bounded queue. When a worker's
queue is full the oldest queued heartbeat is dropped so the newest always wins
(counted as "coalesced"). Readers get copies.

Liveness is decided by ``telemetry.liveness`` (one pure state machine: unknown /
authorised -> registered -> active -> suspect -> inactive -> removed); the manager feeds it
events and publishes its transitions. A heartbeat's arrival is stamped by the RPC handler
(``process_heartbeat``), not when its worker's task applies it. A checker runs every
``check_interval`` (min(timeout/4, 1 s)), measures its own lateness (the event loop was
not running: the master was stalled), applies every queued heartbeat, then ticks the
state machine. Subscribers get the four original events unless they ask for more
(``subscribes_to``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from cloudai.proto import pb
from cloudai.telemetry.liveness import (
    ALIVE,
    NOT_SEEN,
    Connectivity,
    Liveness,
    LivenessPolicy,
    LivenessState,
    StallMeter,
    Transition,
    WorkerLiveness,
)
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)


class TelemetryEvent(enum.Enum):
    UPDATE = "update"  # a heartbeat was applied (or the worker was registered)
    ACTIVE = "active"  # the worker came back after being inactive
    INACTIVE = "inactive"  # no heartbeat for inactivity_timeout
    REMOVED = "removed"  # the worker was unregistered
    # Liveness states that are no heartbeat and change no store row: only subscribers
    # that ask for them (``subscribes_to``) get them.
    SUSPECT = "suspect"  # silent for half the timeout; still is_active
    UNKNOWN = "unknown"  # known from the store, not seen since this master started
    AUTHORISED = "authorised"  # allowed to join, not seen since this master started


Subscriber = Callable[[WorkerTelemetry, TelemetryEvent], None]

CLASSIC_EVENTS = frozenset(
    {TelemetryEvent.UPDATE, TelemetryEvent.ACTIVE, TelemetryEvent.INACTIVE, TelemetryEvent.REMOVED}
)
"""What a subscriber gets unless it asks for more: the events that existed first."""
ALL_EVENTS = frozenset(TelemetryEvent)

_EVENTS_ATTRIBUTE = "telemetry_events"
_F = TypeVar("_F", bound=Callable[..., None])


def subscribes_to(*events: TelemetryEvent) -> Callable[[_F], _F]:
    """Declare which events a subscriber handles (default: ``CLASSIC_EVENTS``).

    A subscriber written before the liveness events existed must not receive a member it
    does not know (it would take a SUSPECT for a heartbeat), so new events are opt-in::

        @subscribes_to(*ALL_EVENTS)
        def on_telemetry(self, state, event): ...
    """
    wanted = frozenset(events)

    def mark(callback: _F) -> _F:
        setattr(callback, _EVENTS_ATTRIBUTE, wanted)
        return callback

    return mark


_ACTIVE = LivenessState.ACTIVE  # a module global: no enum attribute lookup per heartbeat
_STATE_EVENT = {
    LivenessState.SUSPECT: TelemetryEvent.SUSPECT,
    LivenessState.INACTIVE: TelemetryEvent.INACTIVE,
    LivenessState.UNKNOWN: TelemetryEvent.UNKNOWN,
    LivenessState.AUTHORISED: TelemetryEvent.AUTHORISED,
}


@dataclass(slots=True)
class TelemetryStats:
    heartbeats_received: int = 0
    heartbeats_processed: int = 0
    heartbeats_coalesced: int = 0
    subscriber_errors: int = 0
    master_stalls: int = 0  # the checker's timer was late by more than timeout/4
    connectivity_events: int = 0  # every worker went silent at once


@dataclass(slots=True, eq=False)
class _WorkerChannel:
    queue: deque[tuple[pb.Heartbeat, float]]
    # The worker's liveness record: the RPC path stamps ``record.last_seen`` (monotonic
    # arrival time) itself, one attribute store per heartbeat.
    record: WorkerLiveness
    # The future the worker's task sleeps on while its queue is empty. A bare future
    # instead of an asyncio.Event: one wake-up per idle period, no waiter bookkeeping
    # (about 3 us less per heartbeat on the RPC path and in the task).
    waiter: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None


class TelemetryManager:
    def __init__(
        self,
        inactivity_timeout: float = 30.0,
        *,
        queue_size: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        policy: LivenessPolicy | None = None,
    ) -> None:
        if inactivity_timeout <= 0:
            raise ValueError("inactivity_timeout must be > 0")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.inactivity_timeout = inactivity_timeout
        self.policy = policy or LivenessPolicy.for_timeout(inactivity_timeout)
        self.check_interval = self.policy.check_interval
        self._queue_size = queue_size
        self._clock = clock
        self._wall_clock = wall_clock
        self._channels: dict[str, _WorkerChannel] = {}
        self._state: dict[str, WorkerTelemetry] = {}
        self._liveness = Liveness(self.policy, clock())
        self._stall = StallMeter(self.policy.credit_floor)
        self._subscribers: list[tuple[Subscriber, frozenset[TelemetryEvent]]] = []
        # Per event, the subscribers that want it (rebuilt on (un)subscribe): publishing
        # a heartbeat costs no per-subscriber filtering.
        self._by_event: dict[TelemetryEvent, list[Subscriber]] = {e: [] for e in TelemetryEvent}
        self._checker: asyncio.Task[None] | None = None
        self._running = False
        self.stats = TelemetryStats()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the inactivity checker and the tasks of workers registered before start.

        The start-up grace (no worker becomes inactive for one timeout) runs from here."""
        if self._running:
            return
        self._running = True
        self._liveness.start(self._clock())
        for worker_id, channel in self._channels.items():
            channel.task = self._spawn(worker_id, channel)
        self._checker = asyncio.get_running_loop().create_task(
            self._check_loop(), name="telemetry-inactivity-checker"
        )

    async def shutdown(self) -> None:
        """Apply what is queued, stop every per-worker task and the checker, and wait for them."""
        self._running = False
        tasks = [c.task for c in self._channels.values() if c.task is not None]
        if self._checker is not None:
            tasks.append(self._checker)
        for worker_id, channel in self._channels.items():
            self._drain(worker_id, channel)
            channel.task = None
        self._checker = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._running

    # -- registration ----------------------------------------------------------------------

    def add_known(
        self, worker_ids: Iterable[str], *, last_update: Mapping[str, float] | None = None
    ) -> None:
        """Workers the store knows, not seen since this master started: listed (stream
        snapshots, ``/health``) with state ``unknown`` and ``is_active`` false until they
        register or send a heartbeat; never judged inactive meanwhile. ``last_update``:
        Unix seconds of each one's last stored heartbeat, shown as ``last_update``.
        Workers the manager already tracks are left alone."""
        now = self._clock()
        for worker_id in worker_ids:
            transition = self._liveness.known(worker_id, now)
            if transition is None:
                continue
            when = 0.0 if last_update is None else last_update.get(worker_id, 0.0)
            state = WorkerTelemetry(worker_id, last_update=when, is_active=False, state="unknown")
            self._state[worker_id] = state
            self._publish(state, TelemetryEvent.UNKNOWN)

    def authorise_worker(self, worker_id: str) -> None:
        """A worker allowed to join but not seen yet: listed with state ``authorised``."""
        transition = self._liveness.authorised(worker_id, self._clock())
        if transition is None:
            return
        state = WorkerTelemetry(worker_id, is_active=False, state="authorised")
        self._state[worker_id] = state
        self._publish(state, TelemetryEvent.AUTHORISED)

    def register_worker(self, worker_id: str) -> None:
        """Start tracking a worker (idempotent). Registration counts as a sign of life."""
        lost = self._liveness.connectivity is Connectivity.LOST
        transition = self._liveness.registered(worker_id, self._clock())
        self._sign_of_life(worker_id, lost)
        if worker_id not in self._channels:
            record = self._liveness.get(worker_id)
            assert record is not None  # registered: a record exists
            channel = _WorkerChannel(queue=deque(maxlen=self._queue_size), record=record)
            self._channels[worker_id] = channel
            if self._running:
                channel.task = self._spawn(worker_id, channel)
        if transition is None:
            return
        previous = self._state.get(worker_id)
        if previous is None or transition.old in NOT_SEEN:  # first sight since the start
            state = WorkerTelemetry(
                worker_id,
                last_update=self._wall_clock(),
                is_active=True,
                state=transition.new.value,
            )
        else:
            state = replace(previous, is_active=True, state=transition.new.value)
        self._state[worker_id] = state
        came_back = transition.old is LivenessState.INACTIVE
        self._publish(state, TelemetryEvent.ACTIVE if came_back else TelemetryEvent.UPDATE)

    def unregister_worker(self, worker_id: str) -> None:
        channel = self._channels.pop(worker_id, None)
        if channel is not None and channel.task is not None:
            channel.task.cancel()
        self._liveness.removed(worker_id)
        state = self._state.pop(worker_id, None)
        if state is not None:
            self._publish(replace(state, is_active=False, state="removed"), TelemetryEvent.REMOVED)

    def is_registered(self, worker_id: str) -> bool:
        return worker_id in self._channels

    # -- ingest ----------------------------------------------------------------------------

    def process_heartbeat(self, hb: pb.Heartbeat) -> None:
        """Queue a heartbeat for its worker's task. Never blocks; the newest always wins.

        The heartbeat's arrival time is stamped here, so liveness judges when it was
        received, not when its worker's task got to it. A worker the manager does not
        know yet is registered on the fly: callers must have authorised the worker before
        handing its heartbeat over.
        """
        self.stats.heartbeats_received += 1
        channel = self._channels.get(hb.worker_id)
        if channel is None:
            self.register_worker(hb.worker_id)
            channel = self._channels[hb.worker_id]
        channel.record.last_seen = self._clock()
        queue = channel.queue
        if len(queue) == queue.maxlen:
            self.stats.heartbeats_coalesced += 1  # deque drops the oldest on append
        queue.append((hb, self._wall_clock()))
        if channel.task is None:
            if not self._running:
                self._drain(hb.worker_id, channel)  # not started: apply inline
            return
        waiter = channel.waiter
        if waiter is not None:
            channel.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- reads (copies) --------------------------------------------------------------------

    def get_worker_telemetry(self, worker_id: str) -> WorkerTelemetry | None:
        """The worker's latest telemetry; None for one not seen since this master started."""
        state = self._state.get(worker_id)
        if state is None or self._liveness.state(worker_id) in NOT_SEEN:
            return None
        return state.copy()

    def get_all_worker_telemetry(self) -> dict[str, WorkerTelemetry]:
        """Every worker seen since this master started (see ``liveness_states``)."""
        state_of = self._liveness.state
        return {
            worker_id: state.copy()
            for worker_id, state in self._state.items()
            if state_of(worker_id) not in NOT_SEEN
        }

    def latest_states(self) -> list[WorkerTelemetry]:
        """Every worker's latest published state, the not-yet-seen included (their
        ``state`` says which), NOT copied: published states are never mutated, so they
        may be read anywhere (a metrics scrape reads them in a thread), never changed."""
        return list(self._state.values())

    def worker_count(self) -> tuple[int, int]:
        """(workers seen since this master started, active workers), without copying."""
        seen = active = 0
        for record in self._liveness:
            if record.state in ALIVE:
                active += 1
                seen += 1
            elif record.state not in NOT_SEEN:
                seen += 1
        return seen, active

    def liveness_counts(self) -> dict[str, int]:
        """How many workers are in each liveness state (every state listed, 0 included)."""
        counts = self._liveness.counts()
        return {state.value: counts.get(state, 0) for state in LivenessState}

    def liveness_state(self, worker_id: str) -> LivenessState:
        """The worker's liveness state (``removed`` for one the manager does not know)."""
        return self._liveness.state(worker_id)

    def liveness_states(self) -> dict[str, LivenessState]:
        return {record.worker_id: record.state for record in self._liveness}

    @property
    def connectivity(self) -> Connectivity:
        """``lost`` from an all-workers-silent event until the next sign of life."""
        return self._liveness.connectivity

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self, callback: Subscriber, events: Iterable[TelemetryEvent] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(telemetry, event)`` on every change, in the event loop.

        ``events``: the events it wants; by default those it declares with
        ``subscribes_to``, else ``CLASSIC_EVENTS``. The telemetry object is shared and
        must be treated as read-only; callbacks must not block. Returns a function that
        unsubscribes.
        """
        wanted: frozenset[TelemetryEvent] = (
            frozenset(events)
            if events is not None
            else getattr(callback, _EVENTS_ATTRIBUTE, CLASSIC_EVENTS)
        )
        entry = (callback, wanted)
        self._subscribers.append(entry)
        self._index_subscribers()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(entry)
            self._index_subscribers()

        return unsubscribe

    def _index_subscribers(self) -> None:
        self._by_event = {
            event: [callback for callback, wanted in self._subscribers if event in wanted]
            for event in TelemetryEvent
        }

    # -- liveness --------------------------------------------------------------------------

    def check_inactive(self, lateness: float = 0.0) -> list[str]:
        """Apply every queued heartbeat, then judge silence; returns the workers that
        became inactive. ``lateness``: how late the caller's timer fired (the checker
        measures it; a stalled master judges nobody until its hold has passed)."""
        for worker_id, channel in self._channels.items():
            if channel.queue:
                self._drain(worker_id, channel)
        result = self._liveness.tick(self._clock(), lateness)
        if result.stalled:
            self.stats.master_stalls += 1
            log.warning(
                "the master was stalled for %.1f s (its checker fired late): "
                "no worker is judged inactive for %.1f s",
                result.lateness,
                self.policy.hold,
            )
        if result.connectivity_lost:
            self.stats.connectivity_events += 1
            log.warning(
                "all %d workers went silent at once: the master's connectivity, not %d "
                "deaths; inactive transitions held for %.1f s",
                result.silent_workers,
                result.silent_workers,
                self.policy.hold,
            )
        inactive = []
        for transition in result.transitions:
            self._publish_transition(transition)
            if transition.new is LivenessState.INACTIVE:
                inactive.append(transition.worker_id)
        return inactive

    # -- internals -------------------------------------------------------------------------

    def _publish_transition(self, transition: Transition) -> None:
        worker_id = transition.worker_id
        previous = self._state.get(worker_id)
        if previous is None:
            return
        state = replace(previous, is_active=transition.is_active, state=transition.new.value)
        self._state[worker_id] = state
        event = _STATE_EVENT.get(transition.new)
        if event is not None:
            self._publish(state, event)

    def _sign_of_life(self, worker_id: str, lost: bool) -> None:
        if lost and self._liveness.connectivity is Connectivity.OK:
            log.info("worker %s is heard from again: the master's connectivity is back", worker_id)

    def _spawn(self, worker_id: str, channel: _WorkerChannel) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._worker_loop(worker_id, channel), name=f"telemetry-worker-{worker_id}"
        )

    async def _worker_loop(self, worker_id: str, channel: _WorkerChannel) -> None:
        loop = asyncio.get_running_loop()
        queue = channel.queue
        while True:
            if not queue:
                waiter = channel.waiter = loop.create_future()
                await waiter
            self._drain(worker_id, channel)

    def _drain(self, worker_id: str, channel: _WorkerChannel) -> None:
        queue = channel.queue
        while queue:
            hb, received_at = queue.popleft()
            self._apply(worker_id, hb, received_at, channel.record)

    def _apply(
        self, worker_id: str, hb: pb.Heartbeat, received_at: float, record: WorkerLiveness
    ) -> None:
        previous = self._state.get(worker_id)
        state = WorkerTelemetry.from_heartbeat(hb, received_at)
        self._state[worker_id] = state
        self.stats.heartbeats_processed += 1
        if record.state is not _ACTIVE:
            lost = self._liveness.connectivity is Connectivity.LOST
            self._liveness.heartbeat(worker_id, record.last_seen)
            self._sign_of_life(worker_id, lost)
        came_back = previous is not None and not previous.is_active
        self._publish(state, TelemetryEvent.ACTIVE if came_back else TelemetryEvent.UPDATE)

    def _publish(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        for callback in self._by_event[event]:
            try:
                callback(state, event)
            except Exception:
                self.stats.subscriber_errors += 1
                log.exception("telemetry subscriber %r failed", callback)

    async def _check_loop(self) -> None:
        interval = self.check_interval
        stall = self._stall
        while True:
            stall.expect(self._clock() + interval)
            await asyncio.sleep(interval)
            self.check_inactive(stall.fired(self._clock()))
