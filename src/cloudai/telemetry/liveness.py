"""Worker liveness as one explicit state machine. Pure: no asyncio, no I/O, no clock of
its own (every time is passed in, monotonic seconds).

States (``LivenessState``)::

    unknown     known from the store, not seen since this master started
    authorised  allowed to join (admin, --allow-worker), not seen since this master started
    registered  called RegisterWorker, no heartbeat since
    active      heartbeats arrive
    suspect     silent for ``suspect_after`` (half the timeout): one missed check, still active
    inactive    silent for the inactivity timeout
    removed     unregistered (the record is gone; also the state of a worker never heard of)

``TRANSITIONS`` is the whole table: (state, event) -> state; a pair that is not in it
leaves the state as it is. ``is_active`` (the stream's flag) is true for registered,
active and suspect (``ALIVE``).

``Liveness`` applies events to per-worker records and turns the passage of time into
``SILENT`` and ``TIMED_OUT`` events on ``tick``, with three rules that keep a master's own
trouble from being blamed on its workers:

- **Stall-aware.** ``tick`` is told how late the caller's timer fired (``lateness``: the
  event loop was not running). Lateness above ``credit_floor`` is credited to every
  watched worker (silence counts only time the master was running). Lateness above
  ``stall_threshold`` is a *master stall*: no silence transitions for ``hold`` seconds,
  so heartbeats queued during the stall are received and applied before anyone is judged.
- **Start-up grace.** Silence is measured from ``max(last_seen, started)``, so nobody
  becomes inactive during the first timeout after this master started.
- **All silent at once.** When a worker times out while every watched worker (at least
  ``all_silent_min``) is silent for ``suspect_after`` or more, the master lost its
  connectivity rather than N workers at once (the Kubernetes all-zones-down rule): one
  connectivity event is raised and the inactive transitions are held for ``hold`` more
  seconds. The episode ends at the next sign of life from any worker.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType


class LivenessState(enum.StrEnum):
    UNKNOWN = "unknown"
    AUTHORISED = "authorised"
    REGISTERED = "registered"
    ACTIVE = "active"
    SUSPECT = "suspect"
    INACTIVE = "inactive"
    REMOVED = "removed"


class LivenessEvent(enum.StrEnum):
    KNOWN = "known"  # listed by the store when the master starts
    AUTHORISED = "authorised"  # an admin (or --allow-worker) allowed it
    REGISTERED = "registered"  # RegisterWorker succeeded
    HEARTBEAT = "heartbeat"  # a heartbeat was received
    SILENT = "silent"  # tick: silent for suspect_after or more
    TIMED_OUT = "timed_out"  # tick: silent for the inactivity timeout or more
    REMOVED = "removed"  # unregistered / revoked


class Connectivity(enum.StrEnum):
    OK = "ok"
    LOST = "lost"  # every worker went silent at once: the master's network, not N deaths


S, E = LivenessState, LivenessEvent

TRANSITIONS: Mapping[tuple[LivenessState, LivenessEvent], LivenessState] = MappingProxyType(
    {
        # never heard of (or removed): any sign of it creates a record
        (S.REMOVED, E.KNOWN): S.UNKNOWN,
        (S.REMOVED, E.AUTHORISED): S.AUTHORISED,
        (S.REMOVED, E.REGISTERED): S.REGISTERED,
        (S.REMOVED, E.HEARTBEAT): S.ACTIVE,
        # not seen since this master started: silence means nothing yet
        (S.UNKNOWN, E.REGISTERED): S.REGISTERED,
        (S.UNKNOWN, E.HEARTBEAT): S.ACTIVE,
        (S.UNKNOWN, E.REMOVED): S.REMOVED,
        (S.AUTHORISED, E.REGISTERED): S.REGISTERED,
        (S.AUTHORISED, E.HEARTBEAT): S.ACTIVE,
        (S.AUTHORISED, E.REMOVED): S.REMOVED,
        # watched
        (S.REGISTERED, E.HEARTBEAT): S.ACTIVE,
        (S.REGISTERED, E.SILENT): S.SUSPECT,
        (S.REGISTERED, E.TIMED_OUT): S.INACTIVE,
        (S.REGISTERED, E.REMOVED): S.REMOVED,
        (S.ACTIVE, E.SILENT): S.SUSPECT,
        (S.ACTIVE, E.TIMED_OUT): S.INACTIVE,
        (S.ACTIVE, E.REMOVED): S.REMOVED,
        (S.SUSPECT, E.REGISTERED): S.ACTIVE,  # a sign of life
        (S.SUSPECT, E.HEARTBEAT): S.ACTIVE,
        (S.SUSPECT, E.TIMED_OUT): S.INACTIVE,
        (S.SUSPECT, E.REMOVED): S.REMOVED,
        (S.INACTIVE, E.REGISTERED): S.REGISTERED,
        (S.INACTIVE, E.HEARTBEAT): S.ACTIVE,
        (S.INACTIVE, E.REMOVED): S.REMOVED,
    }
)

ALIVE = frozenset({S.REGISTERED, S.ACTIVE, S.SUSPECT})
"""States whose stream flag ``is_active`` is true; the states that silence is judged in."""

NOT_SEEN = frozenset({S.UNKNOWN, S.AUTHORISED})
"""States of workers not seen since this master started."""


def next_state(state: LivenessState, event: LivenessEvent) -> LivenessState:
    """The table: the state after ``event``; the same state when the pair is not listed."""
    return TRANSITIONS.get((state, event), state)


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """The timings, all in seconds. ``for_timeout`` derives them from the timeout."""

    timeout: float  # silent this long: inactive
    check_interval: float  # how often the caller ticks
    suspect_after: float  # silent this long: suspect
    stall_threshold: float  # the caller's timer this late: a master stall
    hold: float  # after a stall or an all-silent event: no inactive transitions this long
    credit_floor: float  # lateness above this is not counted as anyone's silence
    all_silent_min: int = 3  # the all-silent rule needs at least this many watched workers

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError("timeout must be > 0")
        if not 0 < self.check_interval <= self.timeout:
            raise ValueError("need 0 < check_interval <= timeout")
        if not 0 < self.suspect_after <= self.timeout:
            raise ValueError("need 0 < suspect_after <= timeout")
        if self.stall_threshold <= 0 or self.hold < 0 or self.credit_floor < 0:
            raise ValueError("stall_threshold must be > 0; hold and credit_floor >= 0")
        if self.all_silent_min < 1:
            raise ValueError("all_silent_min must be >= 1")

    @classmethod
    def for_timeout(cls, timeout: float, *, all_silent_min: int = 3) -> LivenessPolicy:
        """Check every min(timeout/4, 1 s); suspect at timeout/2; a stall is a timer late
        by more than timeout/4, and holds judgements for timeout/4 (at least one check)."""
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        check = min(timeout / 4, 1.0)
        return cls(
            timeout=timeout,
            check_interval=check,
            suspect_after=timeout / 2,
            stall_threshold=timeout / 4,
            hold=max(check, timeout / 4),
            credit_floor=check / 2,
            all_silent_min=all_silent_min,
        )


class WorkerLiveness:
    """One worker's record. ``last_seen`` is the monotonic time of its last sign of life
    as *received* (a caller may stamp it directly on the hot path)."""

    __slots__ = ("last_seen", "state", "worker_id")

    def __init__(self, worker_id: str, state: LivenessState, last_seen: float) -> None:
        self.worker_id = worker_id
        self.state = state
        self.last_seen = last_seen

    def __repr__(self) -> str:
        return f"WorkerLiveness({self.worker_id!r}, {self.state}, {self.last_seen})"


@dataclass(frozen=True, slots=True)
class Transition:
    worker_id: str
    old: LivenessState
    new: LivenessState
    event: LivenessEvent

    @property
    def is_active(self) -> bool:
        return self.new in ALIVE


@dataclass(frozen=True, slots=True)
class TickResult:
    transitions: tuple[Transition, ...] = ()
    lateness: float = 0.0
    stalled: bool = False  # the caller's timer was late by more than stall_threshold
    held: bool = False  # inactive transitions were held back on this tick
    connectivity_lost: bool = False  # this tick raised the (one) connectivity event
    silent_workers: int = 0  # how many went silent together (the connectivity event)


class Liveness:
    """Every worker's liveness record and the rules above. Not thread-safe (one loop)."""

    def __init__(self, policy: LivenessPolicy, now: float) -> None:
        self.policy = policy
        self.started = now
        self._records: dict[str, WorkerLiveness] = {}
        self._stall_hold_until = float("-inf")
        self._silent_hold_until = float("-inf")
        self.connectivity = Connectivity.OK
        self.stalls = 0  # master stalls seen
        self.stalled_seconds = 0.0  # lateness credited to the workers
        self.connectivity_events = 0

    def start(self, now: float) -> None:
        """The master starts now: the start-up grace runs from here."""
        self.started = now

    # -- reads ------------------------------------------------------------------------------

    def get(self, worker_id: str) -> WorkerLiveness | None:
        return self._records.get(worker_id)

    def state(self, worker_id: str) -> LivenessState:
        record = self._records.get(worker_id)
        return S.REMOVED if record is None else record.state

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._records

    def __iter__(self) -> Iterator[WorkerLiveness]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def counts(self) -> Counter[LivenessState]:
        return Counter(record.state for record in self._records.values())

    # -- events -----------------------------------------------------------------------------

    def apply(self, worker_id: str, event: LivenessEvent, now: float) -> Transition | None:
        """Apply one event; the transition, or None when the state did not change.

        Signs of life (registered, heartbeat) stamp ``last_seen`` (never backwards) and end
        a connectivity episode; ``removed`` drops the record."""
        record = self._records.get(worker_id)
        old = S.REMOVED if record is None else record.state
        new = next_state(old, event)
        if event is E.REGISTERED or event is E.HEARTBEAT:
            self.connectivity = Connectivity.OK
            if record is not None and now > record.last_seen:
                record.last_seen = now
        if new is old:
            return None
        if new is S.REMOVED:
            del self._records[worker_id]
        elif record is None:
            self._records[worker_id] = WorkerLiveness(worker_id, new, now)
        else:
            record.state = new
        return Transition(worker_id, old, new, event)

    def known(self, worker_id: str, now: float) -> Transition | None:
        return self.apply(worker_id, E.KNOWN, now)

    def authorised(self, worker_id: str, now: float) -> Transition | None:
        return self.apply(worker_id, E.AUTHORISED, now)

    def registered(self, worker_id: str, now: float) -> Transition | None:
        return self.apply(worker_id, E.REGISTERED, now)

    def heartbeat(self, worker_id: str, now: float) -> Transition | None:
        return self.apply(worker_id, E.HEARTBEAT, now)

    def removed(self, worker_id: str, now: float = 0.0) -> Transition | None:
        return self.apply(worker_id, E.REMOVED, now)

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float, lateness: float = 0.0) -> TickResult:
        """Judge silence at ``now``. ``lateness``: how late the caller's timer fired."""
        policy = self.policy
        lateness = max(lateness, 0.0)
        if lateness > policy.credit_floor:
            # The master was not running: that time is nobody's silence.
            self.stalled_seconds += lateness
            for record in self._records.values():
                if record.state in ALIVE:
                    record.last_seen = min(now, record.last_seen + lateness)
        if lateness > policy.stall_threshold:
            self.stalls += 1
            self._stall_hold_until = now + policy.hold
            return TickResult(lateness=lateness, stalled=True, held=True)
        if now < self._stall_hold_until - policy.check_interval / 2:
            return TickResult(lateness=lateness, held=True)
        watched, silent, dying = self._silent(now)

        connectivity_lost = False
        held = False
        if dying:
            all_silent = len(silent) + len(dying) == watched
            if (
                all_silent
                and watched >= policy.all_silent_min
                and self.connectivity is Connectivity.OK
            ):
                self.connectivity = Connectivity.LOST
                self.connectivity_events += 1
                self._silent_hold_until = now + policy.hold
                connectivity_lost = True
            if now < self._silent_hold_until - policy.check_interval / 2:
                held = True
                silent.extend(dying)  # suspect, not inactive, for now
                dying = []

        transitions: list[Transition] = []
        for records, event in ((silent, E.SILENT), (dying, E.TIMED_OUT)):
            for record in records:
                new = next_state(record.state, event)
                if new is not record.state:
                    transitions.append(Transition(record.worker_id, record.state, new, event))
                    record.state = new
        return TickResult(
            transitions=tuple(transitions),
            lateness=lateness,
            held=held,
            connectivity_lost=connectivity_lost,
            silent_workers=watched if connectivity_lost else 0,
        )

    def _silent(self, now: float) -> tuple[int, list[WorkerLiveness], list[WorkerLiveness]]:
        """How many workers are watched (alive), and those silent for ``suspect_after``
        and for ``timeout`` at ``now``. Silence runs from ``max(last_seen, started)`` (the
        start-up grace). One pass, no call per record: at 10,000 workers it runs every
        second on the event loop."""
        policy = self.policy
        suspect_at = now - policy.suspect_after  # silent: heard from at or before this
        dead_at = now - policy.timeout
        if self.started > suspect_at:  # within the grace nobody is silent
            suspect_at = dead_at = float("-inf")
        elif self.started > dead_at:
            dead_at = float("-inf")
        registered, active, suspect = S.REGISTERED, S.ACTIVE, S.SUSPECT
        watched = 0
        silent: list[WorkerLiveness] = []
        dying: list[WorkerLiveness] = []
        for record in self._records.values():
            state = record.state
            if state is active or state is suspect or state is registered:
                watched += 1
                seen = record.last_seen
                if seen <= suspect_at:
                    if seen <= dead_at:
                        dying.append(record)
                    else:
                        silent.append(record)
        return watched, silent, dying


class StallMeter:
    """How long this process was not running, measured by a periodic probe's lateness.

    The probe says when it expects to fire (``expect``) and when it did (``fired``);
    lateness above ``threshold`` counts as stalled time. ``running(now)`` is ``now`` less
    every stall, including one in progress that the probe has not reported yet (its timer
    is overdue), so a decision taken at resume sees the stall even before the probe runs.
    """

    __slots__ = ("_due", "stalled", "stalls", "threshold")

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        self.threshold = threshold
        self.stalled = 0.0
        self.stalls = 0
        self._due: float | None = None

    def expect(self, due: float) -> None:
        self._due = due

    def fired(self, now: float) -> float:
        """The probe fired at ``now``: its lateness (0 if none was expected)."""
        due, self._due = self._due, None
        if due is None:
            return 0.0
        late = max(now - due, 0.0)
        if late > self.threshold:
            self.stalled += late
            self.stalls += 1
        return late

    def pending(self, now: float) -> float:
        """The stall in progress: how overdue the probe is, if beyond the threshold."""
        if self._due is None:
            return 0.0
        late = now - self._due
        return late if late > self.threshold else 0.0

    def running(self, now: float) -> float:
        """``now`` on a clock that stood still while the process was stalled."""
        return now - self.stalled - self.pending(now)


class KeepaliveAction(enum.Enum):
    WAIT = "wait"
    PING = "ping"
    DROP = "drop"


class ClientKeepalive:
    """When to ping a silent WebSocket client and when to drop it, on a running clock
    (``StallMeter.running``), so that the master's own stall never looks like the client's
    silence.

    A client silent for ``ping_after`` gets one ping; it is dropped only when it has been
    silent for ``client_timeout`` *and* that ping has been unanswered for ``pong_wait``
    (at least one second of running time), whatever happened to the master meanwhile.
    """

    __slots__ = ("client_timeout", "last_heard", "ping_after", "ping_sent", "pong_wait")

    def __init__(self, ping_interval: float, client_timeout: float, now: float) -> None:
        if ping_interval <= 0 or client_timeout <= 0:
            raise ValueError("ping_interval and client_timeout must be > 0")
        self.ping_after = min(ping_interval, client_timeout)
        self.client_timeout = client_timeout
        self.pong_wait = max(client_timeout - self.ping_after, 1.0)
        self.last_heard = now
        self.ping_sent: float | None = None

    def heard(self, now: float) -> None:
        """Anything arrived from the client (a message, a pong, a ping)."""
        self.last_heard = max(self.last_heard, now)
        self.ping_sent = None

    def due(self) -> float:
        """The running time of the next decision."""
        if self.ping_sent is None:
            return self.last_heard + self.ping_after
        return max(self.last_heard + self.client_timeout, self.ping_sent + self.pong_wait)

    def poll(self, now: float) -> KeepaliveAction:
        if self.ping_sent is None:
            if now - self.last_heard >= self.ping_after:
                self.ping_sent = now
                return KeepaliveAction.PING
            return KeepaliveAction.WAIT
        if now - self.last_heard >= self.client_timeout and now - self.ping_sent >= self.pong_wait:
            return KeepaliveAction.DROP
        return KeepaliveAction.WAIT
