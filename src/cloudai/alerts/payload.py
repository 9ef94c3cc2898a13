"""Notifications as the world reads them: Alertmanager's v2 API alerts (``POST
/api/v2/alerts`` takes a JSON list of them) and the WebSocket ``alerts`` topic. Pure.

A firing alert's ``endsAt`` lies two repeat intervals ahead: the master re-sends it every
repeat interval while it fires, so Alertmanager keeps it active, and resolves it by
itself if the master stops sending (as Prometheus does). A resolved alert's ``endsAt``
is the moment it resolved.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cloudai.alerts.engine import AlertState, Transition


def rfc3339(moment: float) -> str:
    """Unix seconds as ``2026-12-06T16:31:21.250Z``."""
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def summary(transition: Transition) -> str:
    rule = transition.rule
    if rule.summary:
        try:
            return rule.summary.format(
                worker_id=transition.worker_id,
                value="" if transition.value is None else f"{transition.value:g}",
                rule=rule.name,
                threshold=f"{rule.threshold:g}",
            )
        except (KeyError, IndexError, ValueError):
            return rule.summary
    value = "" if transition.value is None else f" (value {transition.value:g})"
    return f"{rule.describe()} on {transition.worker_id}{value}"


def alert_annotations(transition: Transition) -> dict[str, str]:
    out = {"summary": summary(transition), "rule": transition.rule.describe()}
    if transition.value is not None:
        out["value"] = f"{transition.value:g}"
    if transition.reason:
        out["reason"] = transition.reason
    return out


def alertmanager_alert(transition: Transition, generator_url: str = "") -> dict[str, Any]:
    """One alert of Alertmanager's v2 API."""
    if transition.new is AlertState.RESOLVED:
        ends_at = transition.at
    else:
        ends_at = transition.at + 2 * transition.rule.repeat_interval
    alert: dict[str, Any] = {
        "labels": dict(transition.labels),
        "annotations": alert_annotations(transition),
        "startsAt": rfc3339(transition.starts_at),
        "endsAt": rfc3339(ends_at),
    }
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def event(transition: Transition) -> dict[str, Any]:
    """What the WebSocket ``alerts`` topic carries for one notification."""
    return {
        "rule": transition.rule.name,
        "worker_id": transition.worker_id,
        "state": str(transition.new),
        "previous": str(transition.old),
        "repeat": transition.repeat,
        "severity": transition.rule.severity,
        "labels": dict(transition.labels),
        "annotations": alert_annotations(transition),
        "value": transition.value,
        "starts_at": transition.starts_at,
        "ends_at": transition.ends_at,
        "time": transition.at,
    }
