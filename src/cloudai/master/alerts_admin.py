"""AlertsAdmin: the alert use cases that the HTTP API, the console and (through the API)
the CLI call: current alerts, the history, rules and silences. Models of
``cloudai.api.models`` in and out; refusals are ``AdminError``s."""

from __future__ import annotations

import json
from typing import Any

from cloudai.alerts.engine import Alert as EngineAlert
from cloudai.alerts.engine import AlertState
from cloudai.alerts.manager import AlertsError, AlertService
from cloudai.alerts.rules import Matcher, Rule, RuleError, RuleKind, Silence
from cloudai.api.models import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertRuleSpec,
    SilenceInfo,
    SilenceMatcher,
    SilenceRequest,
)
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.store import AlertEventRecord

_KINDS = {
    # Well-formed (the schema holds) but refused: an unknown metric, a resolve threshold
    # on the wrong side, a regular expression that does not compile...
    "invalid": ErrorKind.UNPROCESSABLE,
    "not_found": ErrorKind.NOT_FOUND,
    "conflict": ErrorKind.CONFLICT,
}


def _refusal(exc: AlertsError) -> AdminError:
    return AdminError(_KINDS.get(exc.kind, ErrorKind.INVALID), exc.message)


def rule_model(rule: Rule) -> AlertRule:
    threshold = rule.kind is RuleKind.THRESHOLD
    return AlertRule(
        name=rule.name,
        kind=rule.kind.value,
        source=rule.source.value,
        metric=rule.metric,
        comparison=rule.comparison.value if threshold else "",
        threshold=rule.threshold if threshold else None,
        resolve_threshold=rule.resolve_threshold,
        for_seconds=rule.for_seconds,
        severity=rule.severity,
        labels=dict(rule.labels),
        workers=rule.workers.to_spec(),
        repeat_interval=rule.repeat_interval,
        summary=rule.summary,
        expression=rule.describe(),
    )


def alert_model(alert: EngineAlert) -> Alert:
    return Alert(
        rule=alert.rule.name,
        worker_id=alert.worker_id,
        state=str(alert.state),  # type: ignore[arg-type]
        severity=alert.rule.severity,
        labels=alert.labels,
        value=alert.value,
        since=alert.since,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        silenced=alert.silenced,
        summary=alert.rule.summary,
    )


def event_model(record: AlertEventRecord) -> AlertEvent:
    return AlertEvent(
        id=record.id or 0,
        rule=record.rule,
        worker_id=record.worker_id,
        state=record.state,  # type: ignore[arg-type]
        at=record.at.timestamp(),
        starts_at=record.starts_at.timestamp(),
        severity=record.severity,
        value=record.value,
        labels=json.loads(record.labels or "{}"),
        silenced=record.silenced,
        reason=record.reason,
    )


def silence_model(silence: Silence, now: float) -> SilenceInfo:
    return SilenceInfo(
        silence_id=silence.silence_id,
        matchers=[
            SilenceMatcher.model_construct(name=m.name, value=m.value, op=str(m.op))  # type: ignore[arg-type]
            for m in silence.matchers
        ],
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        created_at=silence.created_at,
        created_by=silence.created_by,
        comment=silence.comment,
        state=silence.state(now),  # type: ignore[arg-type]
    )


class AlertsAdmin:
    def __init__(self, service: AlertService) -> None:
        self.service = service

    def alerts(self, state: str | None = None) -> list[Alert]:
        chosen = None if state is None else AlertState(state)
        return [alert_model(alert) for alert in self.service.alerts(chosen)]

    async def history(
        self, rule: str | None = None, worker_id: str | None = None, limit: int = 100
    ) -> list[AlertEvent]:
        records = await self.service.history(rule, worker_id, limit)
        return [event_model(record) for record in records]

    def rules(self) -> list[AlertRule]:
        return [rule_model(rule) for rule in self.service.rules()]

    async def add_rule(self, spec: AlertRuleSpec, created_by: str = "") -> AlertRule:
        values: dict[str, Any] = spec.model_dump(by_alias=True, exclude_none=True)
        try:
            return rule_model(await self.service.add_rule(values, created_by))
        except AlertsError as exc:
            raise _refusal(exc) from None

    async def delete_rule(self, name: str) -> AlertRule:
        try:
            return rule_model(await self.service.delete_rule(name))
        except AlertsError as exc:
            raise _refusal(exc) from None

    def silences(self) -> list[SilenceInfo]:
        now = self.service.clock()
        return [silence_model(s, now) for s in self.service.silences()]

    async def add_silence(self, request: SilenceRequest) -> SilenceInfo:
        now = self.service.clock()
        try:
            matchers = [Matcher.make(m.name, m.value, m.op) for m in request.matchers]
        except RuleError as exc:
            raise AdminError(ErrorKind.UNPROCESSABLE, str(exc)) from None
        starts_at = now if request.starts_at is None else request.starts_at
        if (request.duration_seconds is None) == (request.ends_at is None):
            raise AdminError(ErrorKind.UNPROCESSABLE, "give either duration_seconds or ends_at")
        if request.ends_at is not None:
            ends_at = request.ends_at
        else:
            assert request.duration_seconds is not None
            ends_at = max(starts_at, now) + request.duration_seconds
        try:
            silence = await self.service.add_silence(
                matchers,
                ends_at,
                starts_at=starts_at,
                created_by=request.created_by,
                comment=request.comment,
            )
        except AlertsError as exc:
            raise _refusal(exc) from None
        return silence_model(silence, now)

    async def delete_silence(self, silence_id: str) -> SilenceInfo:
        try:
            silence = await self.service.delete_silence(silence_id)
        except AlertsError as exc:
            raise _refusal(exc) from None
        return silence_model(silence, self.service.clock())
