"""Terminal rendering of alerts, alert rules, silences and the alert history, shared by
the console and the CLI. Takes the API's JSON (dicts), as ``cloudai.views`` does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from cloudai import views

_STATE_STYLE = {"firing": "bold red", "pending": "yellow", "resolved": "green"}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _value(value: Any) -> str:
    return views.UNKNOWN if value is None else f"{value:g}"


def _styled(text: str, styles: Mapping[str, str]) -> Text:
    return Text(text, style=styles.get(text, ""))


def alerts_table(alerts: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = list(alerts)
    if not rows:
        return Text("no alerts")
    table = Table()
    table.add_column("Rule", no_wrap=True)
    table.add_column("Worker", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Value", justify="right", no_wrap=True)
    table.add_column("Since", justify="right", no_wrap=True)
    table.add_column("Silenced", no_wrap=True)
    for alert in rows:
        table.add_row(
            views.plain(alert["rule"]),
            views.plain(alert["worker_id"]),
            _styled(alert["state"], _STATE_STYLE),
            _styled(alert["severity"], _SEVERITY_STYLE),
            _value(alert.get("value")),
            views.ago(alert.get("fired_at") or alert.get("since"), now),
            "yes" if alert.get("silenced") else "",
        )
    return table


def rules_table(rules: Iterable[Mapping[str, Any]]) -> RenderableType:
    rows = list(rules)
    if not rows:
        return Text("no alert rules (--alert-rules FILE, or: cloudai alerts rules add ...)")
    table = Table()
    table.add_column("Rule", no_wrap=True)
    table.add_column("Expression", overflow="fold")
    table.add_column("Severity", no_wrap=True)
    table.add_column("Workers", overflow="fold")
    table.add_column("Source", no_wrap=True)
    for rule in rows:
        workers = rule.get("workers", "all")
        if isinstance(workers, list):
            workers = ", ".join(workers)
        table.add_row(
            views.plain(rule["name"]),
            views.plain(rule.get("expression", "")),
            _styled(rule["severity"], _SEVERITY_STYLE),
            views.plain(workers),
            rule.get("source", ""),
        )
    return table


def matchers_text(matchers: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(f"{m['name']}{m.get('op', '=')}{m['value']}" for m in matchers)


def silences_table(silences: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = list(silences)
    if not rows:
        return Text("no silences")
    table = Table()
    table.add_column("Id", no_wrap=True)
    table.add_column("Matchers", overflow="fold")
    table.add_column("State", no_wrap=True)
    table.add_column("Ends", justify="right", no_wrap=True)
    table.add_column("By", overflow="fold")
    table.add_column("Comment", overflow="fold")
    for silence in rows:
        ends = silence["ends_at"]
        table.add_row(
            silence["silence_id"],
            views.plain(matchers_text(silence["matchers"])),
            silence["state"],
            f"in {views.format_age(ends - now)}" if ends > now else views.ago(ends, now),
            views.plain(silence.get("created_by", "")),
            views.plain(silence.get("comment", "")),
        )
    return table


def history_table(events: Iterable[Mapping[str, Any]], now: float) -> RenderableType:
    rows = list(events)
    if not rows:
        return Text("no alert history")
    table = Table()
    table.add_column("When", justify="right", no_wrap=True)
    table.add_column("Rule", no_wrap=True)
    table.add_column("Worker", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Value", justify="right", no_wrap=True)
    table.add_column("Note", overflow="fold")
    for event in rows:
        note = event.get("reason", "")
        if event.get("silenced"):
            note = f"{note} (silenced)".strip()
        table.add_row(
            views.ago(event["at"], now),
            views.plain(event["rule"]),
            views.plain(event["worker_id"]),
            _styled(event["state"], _STATE_STYLE),
            _value(event.get("value")),
            views.plain(note),
        )
    return table
