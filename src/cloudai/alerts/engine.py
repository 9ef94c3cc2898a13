"""The alert evaluator: one state machine per (rule, worker). Pure: no asyncio, no I/O, no
clock of its own (every time is passed in, Unix seconds).

States (``AlertState``)::

    inactive   nothing wrong (not stored: the absence of an alert)
    pending    the condition holds, for less than the rule's ``for``
    firing     the condition held for ``for``; notified
    resolved   it fired, then the value crossed the resolve threshold; notified, listed
               for ``resolved_retention`` seconds, then forgotten

Only the transitions to ``firing`` and to ``resolved`` notify (and are kept in the
history); a firing alert is notified again every ``repeat_interval`` (``repeat``). An
alert matched by an active silence notifies nothing, but its state is tracked as usual;
one that was silenced while it started firing is notified when its silence ends (if it
still fires), and its resolution only when its firing was.

Cost: ``observe`` (one telemetry update) does O(rules that select the worker) work: the
rules selecting a worker are looked up once and cached, and nothing is allocated unless
a condition holds. ``tick`` visits pending and firing alerts only (plus the workers not
seen since the start, until the ``worker_not_seen`` rules have judged them).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

from cloudai.alerts.rules import RUNNING_TASKS, Rule, RuleKind, Silence

DEFAULT_RESOLVED_RETENTION: Final = 300.0


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


LISTED_STATES: Final = (AlertState.PENDING, AlertState.FIRING, AlertState.RESOLVED)


@dataclass(slots=True, eq=False)
class Alert:
    """The state of one (rule, worker) pair. Owned by the engine: read, never change."""

    rule: Rule
    worker_id: str
    state: AlertState
    since: float  # when this episode began (pending)
    value: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent: float | None = None  # the last firing notification sent (None: none yet)
    silenced: bool = False
    _labels: dict[str, str] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule.name, self.worker_id)

    @property
    def labels(self) -> dict[str, str]:
        """alertname, worker_id, severity and the rule's labels."""
        if self._labels is None:
            labels = dict(self.rule.labels)
            labels["alertname"] = self.rule.name
            labels["worker_id"] = self.worker_id
            labels["severity"] = self.rule.severity
            self._labels = labels
        return self._labels


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an alert's state, or a repeated firing notification (``repeat``)."""

    rule: Rule
    worker_id: str
    old: AlertState
    new: AlertState
    at: float
    value: float | None
    starts_at: float  # when it began firing (pending for a pending one)
    labels: Mapping[str, str]
    silenced: bool = False
    repeat: bool = False
    reason: str = ""

    @property
    def notifies(self) -> bool:
        """Whether it is sent (log, WebSocket, webhooks): firing and resolved, unsilenced."""
        return self.new in (AlertState.FIRING, AlertState.RESOLVED) and not self.silenced

    @property
    def recorded(self) -> bool:
        """Whether it goes to the history: every change to firing or to resolved."""
        return not self.repeat and self.new in (AlertState.FIRING, AlertState.RESOLVED)

    @property
    def ends_at(self) -> float | None:
        return self.at if self.new is AlertState.RESOLVED else None

    def describe(self) -> str:
        """One log line."""
        value = "" if self.value is None else f", value {self.value:g}"
        extra = f" ({self.reason})" if self.reason else ""
        silenced = " [silenced]" if self.silenced else ""
        verb = "still firing" if self.repeat else str(self.new)
        return (
            f"alert {self.rule.name} on {self.worker_id}: {verb} "
            f"[{self.rule.severity}] {self.rule.describe()}{value}{extra}{silenced}"
        )


Getter = Callable[[Any], Any]


def metric_getter(metric: str) -> Getter:
    """How a threshold rule reads its metric from a telemetry sample."""
    if metric == RUNNING_TASKS:
        return lambda sample: len(sample.running_tasks)
    return attrgetter(metric)


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    name: str
    get: Getter
    breach: Callable[[float, float], bool]
    threshold: float
    resolve_at: float


def _compile(rule: Rule, getter_for: Callable[[str], Getter]) -> _Compiled:
    return _Compiled(
        rule,
        rule.name,
        getter_for(rule.metric),
        rule.comparison.test,
        rule.threshold,
        rule.resolve_at,
    )


class AlertEngine:
    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        started_at: float = 0.0,
        resolved_retention: float = DEFAULT_RESOLVED_RETENTION,
        getter_for: Callable[[str], Getter] = metric_getter,
    ) -> None:
        """``getter_for``: how a threshold rule reads its metric from a sample (None: the
        sample does not report it)."""
        self.started_at = started_at
        self._getter_for = getter_for
        self.resolved_retention = resolved_retention
        self._rules: dict[str, Rule] = {}
        self._threshold: list[_Compiled] = []
        self._inactive_rules: list[Rule] = []
        self._not_seen_rules: list[Rule] = []
        self._silences: dict[str, Silence] = {}
        # worker id -> {rule name -> alert}: every alert that is not inactive.
        self._by_worker: dict[str, dict[str, Alert]] = {}
        self._pending: dict[tuple[str, str], Alert] = {}
        self._firing: dict[tuple[str, str], Alert] = {}
        self._resolved: dict[tuple[str, str], Alert] = {}
        self._selected: dict[str, tuple[_Compiled, ...]] = {}  # worker id -> its rules
        self._unseen: set[str] = set()  # stored workers not heard from since the start
        self._judged_unseen: set[tuple[str, str]] = set()
        self.set_rules(rules, started_at)

    # -- rules and silences -----------------------------------------------------------------

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def rule(self, name: str) -> Rule | None:
        return self._rules.get(name)

    def set_rules(self, rules: Iterable[Rule], now: float) -> list[Transition]:
        """Replace the rules. The alerts of a rule whose definition is unchanged keep their
        state; those of a rule removed or changed end (a firing one is resolved, reason
        "rule removed" / "rule changed"); a changed rule starts afresh."""
        new = {rule.name: rule for rule in rules}
        out: list[Transition] = []
        for name, old in self._rules.items():
            rule = new.get(name)
            if rule is not None and rule == old:
                if rule is not old:  # equal definition, maybe another source: keep states
                    self._rebind(old, rule)
                continue
            reason = "rule removed" if rule is None else "rule changed"
            for alert in list(self._alerts_of(name)):
                out += self._end(alert, now, reason)
            self._judged_unseen = {k for k in self._judged_unseen if k[0] != name}
        self._rules = new
        self._threshold = [
            _compile(r, self._getter_for) for r in new.values() if r.kind is RuleKind.THRESHOLD
        ]
        self._inactive_rules = [r for r in new.values() if r.kind is RuleKind.WORKER_INACTIVE]
        self._not_seen_rules = [r for r in new.values() if r.kind is RuleKind.WORKER_NOT_SEEN]
        self._selected.clear()
        return out

    def _rebind(self, old: Rule, rule: Rule) -> None:
        for alert in self._alerts_of(old.name):
            alert.rule = rule

    def _alerts_of(self, rule_name: str) -> Iterator[Alert]:
        for alerts in self._by_worker.values():
            alert = alerts.get(rule_name)
            if alert is not None:
                yield alert

    def set_silences(self, silences: Iterable[Silence]) -> None:
        self._silences = {s.silence_id: s for s in silences}

    def add_silence(self, silence: Silence) -> None:
        self._silences[silence.silence_id] = silence

    def remove_silence(self, silence_id: str) -> Silence | None:
        return self._silences.pop(silence_id, None)

    @property
    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    def silenced(self, labels: Mapping[str, str], now: float) -> bool:
        for silence in self._silences.values():
            if silence.active(now) and silence.matches(labels):
                return True
        return False

    # -- events -----------------------------------------------------------------------------

    def known_workers(self, worker_ids: Iterable[str]) -> None:
        """Workers the store knows at start, not heard from yet (``worker_not_seen``)."""
        self._unseen.update(worker_ids)

    def observe(self, sample: Any, now: float) -> list[Transition]:
        """A telemetry update of ``sample.worker_id``: evaluate the rules that select it."""
        worker_id: str = sample.worker_id
        out: list[Transition] = []
        if self._unseen and worker_id in self._unseen:
            self._unseen.discard(worker_id)
            out += self._seen(worker_id, now)
        rules = self._selected.get(worker_id)
        if rules is None:
            rules = self._select(worker_id)
        if not rules:
            return out
        alerts = self._by_worker.get(worker_id)
        for compiled in rules:
            value = compiled.get(sample)
            if value is None:  # a field this worker does not report
                continue
            alert = None if alerts is None else alerts.get(compiled.name)
            if alert is None:
                if compiled.breach(value, compiled.threshold):
                    alert = self._open(compiled.rule, worker_id, now, float(value))
                    alerts = self._by_worker[worker_id]
                    out += self._advance(alert, now)
                continue
            alert.value = float(value)
            state = alert.state
            if state is AlertState.PENDING:
                if compiled.breach(value, compiled.threshold):
                    out += self._advance(alert, now)
                else:
                    self._drop(alert)
            elif state is AlertState.FIRING:
                if not compiled.breach(value, compiled.resolve_at):
                    out.append(self._resolve(alert, now, ""))
            elif compiled.breach(value, compiled.threshold):  # resolved: a new episode
                self._drop(alert)
                alert = self._open(compiled.rule, worker_id, now, float(value))
                alerts = self._by_worker[worker_id]
                out += self._advance(alert, now)
        return out

    def worker_inactive(self, worker_id: str, now: float) -> list[Transition]:
        """The worker turned inactive (``worker_inactive`` rules)."""
        out: list[Transition] = []
        for rule in self._inactive_rules:
            if not rule.workers.matches(worker_id):
                continue
            alert = self._by_worker.get(worker_id, {}).get(rule.name)
            if alert is not None and alert.state is not AlertState.RESOLVED:
                continue
            if alert is not None:
                self._drop(alert)
            out += self._advance(self._open(rule, worker_id, now, None), now)
        return out

    def worker_active(self, worker_id: str, now: float) -> list[Transition]:
        """The worker is heard from again: its ``worker_inactive`` alerts end."""
        return self._end_kind(worker_id, self._inactive_rules, now, "worker active again")

    def worker_removed(self, worker_id: str, now: float) -> list[Transition]:
        """The worker was unregistered: every alert of it ends (firing ones resolve)."""
        self._unseen.discard(worker_id)
        self._judged_unseen = {k for k in self._judged_unseen if k[1] != worker_id}
        self._selected.pop(worker_id, None)
        out: list[Transition] = []
        for alert in list(self._by_worker.get(worker_id, {}).values()):
            out += self._end(alert, now, "worker removed")
        self._by_worker.pop(worker_id, None)
        return out

    def tick(self, now: float) -> list[Transition]:
        """The passage of time: pending alerts whose ``for`` has passed fire, firing ones
        are repeated or (their silence over) sent, stored workers not heard from within
        ``for`` of the start fire, resolved ones are forgotten after the retention."""
        out: list[Transition] = []
        for alert in list(self._pending.values()):
            out += self._advance(alert, now)
        for alert in list(self._firing.values()):
            silenced = self.silenced(alert.labels, now)
            alert.silenced = silenced
            if silenced:
                continue
            if alert.last_sent is None or now - alert.last_sent >= alert.rule.repeat_interval:
                alert.last_sent = now
                out.append(self._transition(alert, AlertState.FIRING, now, repeat=True))
        if self._unseen and self._not_seen_rules:
            out += self._judge_unseen(now)
        if self._resolved:
            horizon = now - self.resolved_retention
            for alert in list(self._resolved.values()):
                if alert.resolved_at is not None and alert.resolved_at <= horizon:
                    self._drop(alert)
        return out

    # -- reads ------------------------------------------------------------------------------

    def alerts(self, state: AlertState | None = None) -> list[Alert]:
        """Pending, firing and resolved alerts (or those of one state), by rule and worker."""
        if state is AlertState.PENDING:
            chosen: Iterable[Alert] = self._pending.values()
        elif state is AlertState.FIRING:
            chosen = self._firing.values()
        elif state is AlertState.RESOLVED:
            chosen = self._resolved.values()
        elif state is AlertState.INACTIVE:
            chosen = ()
        else:
            chosen = [*self._pending.values(), *self._firing.values(), *self._resolved.values()]
        return sorted(chosen, key=lambda a: (a.rule.name, a.worker_id))

    def state_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) -> how many alerts, for pending, firing and resolved of every rule
        (0 included)."""
        counts = {(name, str(state)): 0 for name in self._rules for state in LISTED_STATES}
        for table in (self._pending, self._firing, self._resolved):
            for alert in table.values():
                key = (alert.rule.name, str(alert.state))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def get(self, rule_name: str, worker_id: str) -> Alert | None:
        return self._by_worker.get(worker_id, {}).get(rule_name)

    # -- internals --------------------------------------------------------------------------

    def _select(self, worker_id: str) -> tuple[_Compiled, ...]:
        rules = tuple(c for c in self._threshold if c.rule.workers.matches(worker_id))
        self._selected[worker_id] = rules
        return rules

    def _open(self, rule: Rule, worker_id: str, now: float, value: float | None) -> Alert:
        alert = Alert(rule, worker_id, AlertState.PENDING, now, value)
        self._by_worker.setdefault(worker_id, {})[rule.name] = alert
        self._pending[alert.key] = alert
        return alert

    def _advance(self, alert: Alert, now: float) -> list[Transition]:
        """A pending alert fires once its ``for`` has passed."""
        if alert.state is not AlertState.PENDING or now - alert.since < alert.rule.for_seconds:
            return []
        del self._pending[alert.key]
        self._firing[alert.key] = alert
        alert.state = AlertState.FIRING
        alert.fired_at = now
        alert.silenced = self.silenced(alert.labels, now)
        if not alert.silenced:
            alert.last_sent = now
        return [self._transition(alert, AlertState.PENDING, now)]

    def _resolve(self, alert: Alert, now: float, reason: str) -> Transition:
        del self._firing[alert.key]
        self._resolved[alert.key] = alert
        alert.state = AlertState.RESOLVED
        alert.resolved_at = now
        # Resolution is sent only for a firing that was: a silenced episode stays silent.
        alert.silenced = alert.last_sent is None or self.silenced(alert.labels, now)
        return self._transition(alert, AlertState.FIRING, now, reason=reason)

    def _end(self, alert: Alert, now: float, reason: str) -> list[Transition]:
        """The alert ends outright (its rule or worker is gone)."""
        out = []
        if alert.state is AlertState.FIRING:
            out.append(self._resolve(alert, now, reason))
        self._drop(alert)
        return out

    def _end_kind(
        self, worker_id: str, rules: Sequence[Rule], now: float, reason: str
    ) -> list[Transition]:
        alerts = self._by_worker.get(worker_id)
        if not alerts:
            return []
        out: list[Transition] = []
        for rule in rules:
            alert = alerts.get(rule.name)
            if alert is None:
                continue
            if alert.state is AlertState.FIRING:
                out.append(self._resolve(alert, now, reason))
            elif alert.state is AlertState.PENDING:
                self._drop(alert)
        return out

    def _seen(self, worker_id: str, now: float) -> list[Transition]:
        for rule in self._not_seen_rules:
            self._judged_unseen.discard((rule.name, worker_id))
        return self._end_kind(worker_id, self._not_seen_rules, now, "heard from")

    def _judge_unseen(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        for rule in self._not_seen_rules:
            if now - self.started_at < rule.for_seconds:
                continue
            for worker_id in self._unseen:
                key = (rule.name, worker_id)
                if key in self._judged_unseen or not rule.workers.matches(worker_id):
                    continue
                self._judged_unseen.add(key)
                alert = self._open(rule, worker_id, self.started_at, None)
                out += self._advance(alert, now)
        return out

    def _drop(self, alert: Alert) -> None:
        key = alert.key
        self._pending.pop(key, None)
        self._firing.pop(key, None)
        self._resolved.pop(key, None)
        alerts = self._by_worker.get(alert.worker_id)
        if alerts is not None and alerts.get(alert.rule.name) is alert:
            del alerts[alert.rule.name]
            if not alerts:
                del self._by_worker[alert.worker_id]

    def _transition(
        self,
        alert: Alert,
        old: AlertState,
        now: float,
        *,
        repeat: bool = False,
        reason: str = "",
    ) -> Transition:
        return Transition(
            alert.rule,
            alert.worker_id,
            old,
            alert.state,
            now,
            alert.value,
            alert.fired_at if alert.fired_at is not None else alert.since,
            alert.labels,
            alert.silenced,
            repeat,
            reason,
        )
