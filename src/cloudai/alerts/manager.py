"""``AlertService``: the alert engine inside the master.

It listens to the ``TelemetryManager`` (updates, inactive, active, removed: O(rules that
select the worker) per update, in the event loop, off the RPC path) and ticks every
``evaluation_interval`` for ``for`` durations, repeats and the built-in rules. Each
notification is logged (one line), published on the WebSocket ``alerts`` topic (an
injected callback) and queued for every webhook (each its own task and bounded queue).
Transitions to firing and resolved go to the store's history, written behind by one task
(batches, off the event loop). Rules come from the rules file (read-only through the
API; reloaded on SIGHUP, keeping the old rules when the new file is bad) and from the
API (kept in the store, so they survive restarts); silences are kept in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudai.alerts import payload
from cloudai.alerts.engine import Alert, AlertEngine, AlertState, Transition
from cloudai.alerts.metrics import available_metrics, telemetry_getter
from cloudai.alerts.rules import (
    Matcher,
    Rule,
    RuleError,
    RuleSource,
    Silence,
    make_silence,
    parse_rules,
    rule_from_spec,
)
from cloudai.alerts.webhook import WebhookSender
from cloudai.store import (
    AlertEventRecord,
    AlertRuleRecord,
    DuplicateError,
    SilenceRecord,
    Store,
    StoreError,
)
from cloudai.telemetry.liveness import LivenessState
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry

log = logging.getLogger(__name__)

Publish = Callable[[str, Mapping[str, Any]], object]
"""Sends one event on a WebSocket topic (the hub's ``publish(topic, payload)``)."""
ALERTS_TOPIC = "alerts"
HISTORY_KEEP = 100_000
"""The history keeps this many transitions (older ones are pruned)."""


class AlertsError(Exception):
    """A refused request: ``kind`` is ``invalid``, ``not_found`` or ``conflict``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(slots=True)
class AlertStats:
    transitions: int = 0
    notifications: int = 0
    silenced: int = 0
    publish_errors: int = 0
    history_written: int = 0
    history_failures: int = 0
    reloads: int = 0
    reload_failures: int = 0


def _at(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def event_record(transition: Transition) -> AlertEventRecord:
    return AlertEventRecord(
        rule=transition.rule.name,
        worker_id=transition.worker_id,
        state=str(transition.new),
        at=_at(transition.at),
        starts_at=_at(transition.starts_at),
        severity=transition.rule.severity,
        value=transition.value,
        labels=json.dumps(dict(transition.labels), sort_keys=True),
        silenced=transition.silenced,
        reason=transition.reason,
    )


def matchers_json(matchers: Iterable[Matcher]) -> str:
    return json.dumps([{"name": m.name, "op": str(m.op), "value": m.value} for m in matchers])


def silence_from_record(record: SilenceRecord) -> Silence:
    matchers = [Matcher.make(m["name"], m["value"], m["op"]) for m in json.loads(record.matchers)]
    return Silence(
        record.silence_id,
        tuple(matchers),
        record.ends_at.timestamp(),
        record.starts_at.timestamp(),
        record.created_by,
        record.comment,
        record.created_at.timestamp(),
    )


class AlertService:
    def __init__(
        self,
        store: Store | None,
        *,
        rules_file: Path | None = None,
        webhooks: Sequence[str] = (),
        evaluation_interval: float = 1.0,
        publish: Publish | None = None,
        generator_url: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = time.time,
        history_keep: int = HISTORY_KEEP,
        webhook_senders: Sequence[WebhookSender] | None = None,
    ) -> None:
        if evaluation_interval <= 0:
            raise ValueError("evaluation_interval must be > 0")
        self.store = store
        self.rules_file = rules_file
        self.evaluation_interval = evaluation_interval
        self.publish = publish
        self.generator_url = generator_url
        self.clock = clock
        self.history_keep = history_keep
        self.metrics = available_metrics()
        self.engine = AlertEngine(started_at=clock(), getter_for=telemetry_getter)
        self.webhooks = (
            list(webhook_senders)
            if webhook_senders is not None
            else [WebhookSender(url) for url in webhooks]
        )
        self.stats = AlertStats()
        self._file_rules: list[Rule] = []
        self._api_rules: dict[str, Rule] = {}
        self._history: list[AlertEventRecord] = []
        # One write at a time: a read of the history waits for a write under way.
        self._history_lock = asyncio.Lock()
        self._history_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._reloading: asyncio.Task[bool] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the rules file (RuleError, one line, when it is bad: the master does not
        start) and the rules and silences the store keeps."""
        if self.rules_file is not None:
            self._file_rules = await asyncio.to_thread(self._read_rules_file)
        if self.store is not None:
            records = await asyncio.to_thread(self.store.list_alert_rules)
            for record in records:
                try:
                    rule = rule_from_spec(
                        json.loads(record.spec), metrics=self.metrics, source=RuleSource.API
                    )
                except (RuleError, ValueError) as exc:
                    log.error("stored alert rule %s is not used: %s", record.name, exc)
                    continue
                self._api_rules[rule.name] = rule
            silences = await asyncio.to_thread(self.store.list_silences)
            now = self.clock()
            for silence_record in silences:
                try:
                    silence = silence_from_record(silence_record)
                except (RuleError, ValueError, KeyError) as exc:
                    log.error("stored silence %s is not used: %s", silence_record.silence_id, exc)
                    continue
                if silence.ends_at > now:
                    self.engine.add_silence(silence)
        self._apply_rules()
        if self._file_rules or self._api_rules:
            log.info(
                "alerts: %d rule(s) from %s, %d made through the API, %d webhook(s)",
                len(self._file_rules),
                self.rules_file or "no file",
                len(self._api_rules),
                len(self.webhooks),
            )

    def attach(self, telemetry: TelemetryManager) -> None:
        """Listen to the telemetry; the workers the store knows and that have not been
        heard from are watched by the ``worker_not_seen`` rules."""
        self.engine.started_at = self.clock()
        states = telemetry.liveness_states()
        self.engine.known_workers(w for w, s in states.items() if s is LivenessState.UNKNOWN)
        self._unsubscribe = telemetry.subscribe(
            self.on_telemetry,
            (
                TelemetryEvent.UPDATE,
                TelemetryEvent.ACTIVE,
                TelemetryEvent.INACTIVE,
                TelemetryEvent.REMOVED,
            ),
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._history_wake = asyncio.Event()
        for sender in self.webhooks:
            sender.start()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="alerts-tick"),
            loop.create_task(self._history_loop(), name="alerts-history"),
        ]

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._reloading is not None:
            self._reloading.cancel()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._write_history()
        await asyncio.gather(*(sender.stop() for sender in self.webhooks))

    # -- telemetry --------------------------------------------------------------------------

    def on_telemetry(self, state: WorkerTelemetry, event: TelemetryEvent) -> None:
        engine, now = self.engine, self.clock()
        if event is TelemetryEvent.UPDATE:
            transitions = engine.observe(state, now)
        elif event is TelemetryEvent.INACTIVE:
            transitions = engine.worker_inactive(state.worker_id, now)
        elif event is TelemetryEvent.ACTIVE:
            transitions = engine.worker_active(state.worker_id, now)
            transitions += engine.observe(state, now)
        elif event is TelemetryEvent.REMOVED:
            transitions = engine.worker_removed(state.worker_id, now)
        else:
            return
        if transitions:
            self.emit(transitions)

    def tick(self) -> None:
        transitions = self.engine.tick(self.clock())
        if transitions:
            self.emit(transitions)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.evaluation_interval)
            try:
                self.tick()
            except Exception:  # a bug must not stop the evaluation
                log.exception("alert evaluation failed")

    # -- notifications ----------------------------------------------------------------------

    def emit(self, transitions: Sequence[Transition]) -> None:
        """Log, publish, send and record transitions (the event loop; never blocks)."""
        to_send: list[dict[str, Any]] = []
        url = ""
        for transition in transitions:
            self.stats.transitions += 1
            if transition.recorded:
                self._history.append(event_record(transition))
            if not transition.notifies:
                if transition.silenced and transition.recorded:
                    self.stats.silenced += 1
                    log.info("%s", transition.describe())
                continue
            self.stats.notifications += 1
            log.info("%s", transition.describe())
            if self.publish is not None:
                try:
                    self.publish(ALERTS_TOPIC, payload.event(transition))
                except Exception as exc:
                    self.stats.publish_errors += 1
                    log.debug("alerts topic: publish failed: %s", exc)
            if self.webhooks:
                if not to_send:
                    url = self.generator_url()
                to_send.append(payload.alertmanager_alert(transition, url))
        if to_send:
            for sender in self.webhooks:
                sender.offer(to_send)
        if self._history and self._history_wake is not None:
            self._history_wake.set()

    async def _history_loop(self) -> None:
        assert self._history_wake is not None
        written_since_prune = 0
        while True:
            await self._history_wake.wait()
            self._history_wake.clear()
            written_since_prune += await self._write_history()
            if written_since_prune >= 1000 and self.store is not None:
                written_since_prune = 0
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(self.store.prune_alert_events, self.history_keep)
            await asyncio.sleep(0.05)  # gather what arrives together into one write

    async def _write_history(self) -> int:
        async with self._history_lock:
            batch, self._history = self._history, []
            if not batch or self.store is None:
                return 0
            try:
                await asyncio.to_thread(self.store.add_alert_events, batch)
            except StoreError as exc:
                self.stats.history_failures += 1
                log.error("alert history: %d transition(s) not stored: %s", len(batch), exc)
                return 0
            self.stats.history_written += len(batch)
            return len(batch)

    async def history_flushed(self) -> None:
        """Write what is queued for the history now (tests, and before a history read)."""
        await self._write_history()

    # -- rules ------------------------------------------------------------------------------

    def _read_rules_file(self) -> list[Rule]:
        assert self.rules_file is not None
        try:
            text = self.rules_file.read_text()
        except OSError as exc:
            raise RuleError(f"cannot read {self.rules_file}: {exc.strerror or exc}") from None
        try:
            rules = parse_rules(text, metrics=self.metrics, source=RuleSource.FILE)
        except RuleError as exc:
            raise RuleError(f"{self.rules_file}: {exc}") from None
        return rules

    def _apply_rules(self) -> None:
        file_names = {rule.name for rule in self._file_rules}
        for name in [n for n in self._api_rules if n in file_names]:
            log.warning("alert rule %s is in the rules file and the store: the file's wins", name)
        rules = [*self._file_rules]
        rules += [r for n, r in self._api_rules.items() if n not in file_names]
        transitions = self.engine.set_rules(rules, self.clock())
        if transitions:
            self.emit(transitions)

    async def reload_rules_file(self) -> bool:
        """Read the rules file again (SIGHUP). A bad file: one error line, the old rules
        stay. Unchanged rules keep their alerts' states."""
        if self.rules_file is None:
            log.info("SIGHUP: no --alert-rules file to reload")
            return False
        self.stats.reloads += 1
        try:
            rules = await asyncio.to_thread(self._read_rules_file)
        except RuleError as exc:
            self.stats.reload_failures += 1
            log.error("alert rules not reloaded, the old ones stay: %s", exc)
            return False
        self._file_rules = rules
        self._apply_rules()
        log.info("alert rules reloaded from %s: %d rule(s)", self.rules_file, len(rules))
        return True

    def request_reload(self) -> None:
        """For a signal handler: reload in the background (one at a time)."""
        if self._reloading is not None and not self._reloading.done():
            return
        self._reloading = asyncio.get_running_loop().create_task(
            self.reload_rules_file(), name="alerts-reload"
        )

    def rules(self) -> list[Rule]:
        return sorted(self.engine.rules, key=lambda r: r.name)

    async def add_rule(self, spec: Mapping[str, Any], created_by: str = "") -> Rule:
        try:
            rule = rule_from_spec(spec, metrics=self.metrics, source=RuleSource.API)
        except RuleError as exc:
            raise AlertsError("invalid", str(exc)) from None
        if self.engine.rule(rule.name) is not None:
            raise AlertsError("conflict", f"an alert rule named {rule.name!r} exists already")
        if self.store is not None:
            record = AlertRuleRecord(rule.name, json.dumps(rule.to_spec()), created_by=created_by)
            try:
                await asyncio.to_thread(self.store.add_alert_rule, record)
            except DuplicateError:
                raise AlertsError(
                    "conflict", f"an alert rule named {rule.name!r} exists already"
                ) from None
        self._api_rules[rule.name] = rule
        self._apply_rules()
        return rule

    async def delete_rule(self, name: str) -> Rule:
        rule = self.engine.rule(name)
        if rule is None:
            raise AlertsError("not_found", f"no alert rule {name!r}")
        if rule.source is RuleSource.FILE:
            raise AlertsError(
                "conflict",
                f"alert rule {name!r} comes from the rules file: edit the file and send the "
                "master SIGHUP",
            )
        if self.store is not None:
            await asyncio.to_thread(self.store.delete_alert_rule, name)
        self._api_rules.pop(name, None)
        self._apply_rules()
        return rule

    # -- silences ---------------------------------------------------------------------------

    def silences(self) -> list[Silence]:
        return sorted(self.engine.silences, key=lambda s: (s.created_at, s.silence_id))

    async def add_silence(
        self,
        matchers: Sequence[Matcher],
        ends_at: float,
        *,
        starts_at: float | None = None,
        created_by: str = "",
        comment: str = "",
    ) -> Silence:
        now = self.clock()
        try:
            silence = make_silence(
                secrets.token_hex(6),
                matchers,
                ends_at,
                starts_at=now if starts_at is None else starts_at,
                created_by=created_by,
                comment=comment,
                created_at=now,
            )
        except RuleError as exc:
            raise AlertsError("invalid", str(exc)) from None
        if silence.ends_at <= now:
            raise AlertsError("invalid", "a silence must end in the future")
        if self.store is not None:
            record = SilenceRecord(
                silence.silence_id,
                matchers_json(silence.matchers),
                starts_at=_at(silence.starts_at),
                ends_at=_at(silence.ends_at),
                created_at=_at(now),
                created_by=silence.created_by,
                comment=silence.comment,
            )
            await asyncio.to_thread(self.store.add_silence, record)
        self.engine.add_silence(silence)
        return silence

    async def delete_silence(self, silence_id: str) -> Silence:
        silence = self.engine.remove_silence(silence_id)
        if silence is None:
            raise AlertsError("not_found", f"no silence {silence_id!r}")
        if self.store is not None:
            await asyncio.to_thread(self.store.delete_silence, silence_id)
        return silence

    # -- reads ------------------------------------------------------------------------------

    def alerts(self, state: AlertState | None = None) -> list[Alert]:
        now = self.clock()
        alerts = self.engine.alerts(state)
        for alert in alerts:
            alert.silenced = self.engine.silenced(alert.labels, now)
        return alerts

    async def history(
        self, rule: str | None = None, worker_id: str | None = None, limit: int = 100
    ) -> list[AlertEventRecord]:
        if self.store is None:
            return []
        await self._write_history()
        return await asyncio.to_thread(self.store.list_alert_events, rule, worker_id, limit)

    def state_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) -> alerts, for the Prometheus collector."""
        return self.engine.state_counts()
