"""The alert endpoints of the admin API (``/api/alerts``, ``/api/alert-rules``,
``/api/silences``): their handlers and their ``Operation``s, which ``admin_api`` serves
and documents with the rest. Reads need a ``read`` token, writes ``admin`` (the policy
of ``http_auth``); refusals are ``AdminError``s, which ``admin_api``'s middleware turns
into ``{"error"}`` answers."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field, TypeAdapter

from cloudai.api.models import (
    Alert,
    AlertEvent,
    AlertFilter,
    AlertHistoryFilter,
    AlertRule,
    AlertRuleSpec,
    ErrorBody,
    Identifier,
    SilenceInfo,
    SilenceRequest,
)
from cloudai.master.alerts_admin import AlertsAdmin
from cloudai.master.api_input import read_body, read_query
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.master.openapi import Operation, Param, Reply

ALERTS_KEY = web.AppKey("alerts_admin", AlertsAdmin)

_ALERTS: TypeAdapter[list[Alert]] = TypeAdapter(list[Alert])
_EVENTS: TypeAdapter[list[AlertEvent]] = TypeAdapter(list[AlertEvent])
_RULES: TypeAdapter[list[AlertRule]] = TypeAdapter(list[AlertRule])
_SILENCES: TypeAdapter[list[SilenceInfo]] = TypeAdapter(list[SilenceInfo])


def _alerts(request: web.Request) -> AlertsAdmin:
    alerts = request.app.get(ALERTS_KEY)
    if alerts is None:
        raise AdminError(ErrorKind.UNAVAILABLE, "alerts are not enabled on this master")
    return alerts


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def list_alerts(request: web.Request) -> web.Response:
    query = read_query(request, AlertFilter)
    return _json(_ALERTS.dump_json(_alerts(request).alerts(query.state)))


async def alert_history(request: web.Request) -> web.Response:
    query = read_query(request, AlertHistoryFilter)
    events = await _alerts(request).history(query.rule, query.worker_id, query.limit)
    return _json(_EVENTS.dump_json(events))


async def list_rules(request: web.Request) -> web.Response:
    return _json(_RULES.dump_json(_alerts(request).rules()))


async def add_rule(request: web.Request) -> web.Response:
    spec = await read_body(request, AlertRuleSpec)
    rule = await _alerts(request).add_rule(spec)
    return _json(rule.model_dump_json().encode(), 201)


async def delete_rule(request: web.Request) -> web.Response:
    rule = await _alerts(request).delete_rule(request.match_info["name"])
    return _json(rule.model_dump_json().encode())


async def list_silences(request: web.Request) -> web.Response:
    return _json(_SILENCES.dump_json(_alerts(request).silences()))


async def add_silence(request: web.Request) -> web.Response:
    body = await read_body(request, SilenceRequest)
    silence = await _alerts(request).add_silence(body)
    return _json(silence.model_dump_json().encode(), 201)


async def delete_silence(request: web.Request) -> web.Response:
    silence = await _alerts(request).delete_silence(request.match_info["silence_id"])
    return _json(silence.model_dump_json().encode())


def _error(text: str) -> Reply:
    return Reply(text, ErrorBody)


_E400 = _error(
    "Invalid input: a query value or body that does not fit, or a rule the master refuses"
)
_E413 = _error("The body is larger than 1 MiB")
_E503 = _error("Alerts are not enabled on this master")
RuleName = Annotated[str, Field(min_length=1, max_length=128, description="the rule's name")]
SilenceId = Annotated[str, Field(min_length=1, max_length=32, description="as listed")]

ALERT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/alerts",
        "listAlerts",
        "Current alerts: pending, firing and recently resolved",
        {200: Reply("The alerts, by rule and worker", list[Alert]), 400: _E400, 503: _E503},
        handler=list_alerts,
        params=(Param("state", "query", AlertFilter.model_fields["state"].annotation, ""),),
    ),
    Operation(
        "GET",
        "/api/alerts/history",
        "alertHistory",
        "The history of alert transitions to firing and resolved, newest first",
        {200: Reply("The transitions", list[AlertEvent]), 400: _E400, 503: _E503},
        handler=alert_history,
        params=(
            Param("rule", "query", RuleName, "only this rule"),
            Param("worker_id", "query", Identifier, "only this worker"),
            Param("limit", "query", Annotated[int, Field(ge=1, le=10_000)], "at most (100)"),
        ),
    ),
    Operation(
        "GET",
        "/api/alert-rules",
        "listAlertRules",
        "Every alert rule: from the rules file (read-only here) and made through the API",
        {200: Reply("The rules", list[AlertRule]), 503: _E503},
        handler=list_rules,
    ),
    Operation(
        "POST",
        "/api/alert-rules",
        "createAlertRule",
        "Make an alert rule; it is stored, so it survives restarts",
        {
            201: Reply("Made", AlertRule),
            400: _E400,
            422: _error(
                "Well-formed, but not a rule the master can use: an unknown metric, a "
                "threshold rule without a metric or threshold, a resolve threshold on the "
                "wrong side of the threshold, a bad duration or worker selector"
            ),
            409: _error("A rule with this name exists"),
            413: _E413,
            503: _E503,
        },
        handler=add_rule,
        body=AlertRuleSpec,
    ),
    Operation(
        "DELETE",
        "/api/alert-rules/{name}",
        "deleteAlertRule",
        "Delete an alert rule made through the API (its firing alerts resolve)",
        {
            200: Reply("Deleted: the rule", AlertRule),
            404: _error("No such rule"),
            409: _error("The rule comes from the rules file: edit it and send SIGHUP"),
            503: _E503,
        },
        handler=delete_rule,
        params=(Param("name", "path", RuleName, "the rule's name"),),
    ),
    Operation(
        "GET",
        "/api/silences",
        "listSilences",
        "Every silence that has not ended",
        {200: Reply("The silences", list[SilenceInfo]), 503: _E503},
        handler=list_silences,
    ),
    Operation(
        "POST",
        "/api/silences",
        "createSilence",
        "Silence the alerts whose labels match: they send nothing until it ends",
        {
            201: Reply("Made", SilenceInfo),
            400: _E400,
            413: _E413,
            422: _error(
                "Well-formed, but not a silence the master can use: no end (give "
                "duration_seconds or ends_at), an end in the past, a bad regular expression"
            ),
            503: _E503,
        },
        handler=add_silence,
        body=SilenceRequest,
        description="Matchers test an alert's labels: alertname (the rule), worker_id, "
        "severity and the rule's labels. A silenced alert's state is still tracked.",
    ),
    Operation(
        "DELETE",
        "/api/silences/{silence_id}",
        "deleteSilence",
        "End a silence now",
        {200: Reply("Ended: the silence", SilenceInfo), 404: _error("No such silence"), 503: _E503},
        handler=delete_silence,
        params=(Param("silence_id", "path", SilenceId, "the silence's id"),),
    ),
)


def install(app: web.Application, alerts: AlertsAdmin) -> None:
    """Give the alert endpoints (routed by ``admin_api``) their use cases."""
    app[ALERTS_KEY] = alerts
