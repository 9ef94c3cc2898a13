"""AlertService without sockets: telemetry events in, notifications out (log, the
``alerts`` topic), rule file reloads, API rules and silences (no store)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from cloudai.alerts.engine import AlertState
from cloudai.alerts.manager import AlertsError, AlertService
from cloudai.alerts.rules import Matcher, RuleError
from cloudai.telemetry.manager import TelemetryEvent, TelemetryManager
from cloudai.telemetry.model import WorkerTelemetry

RULES = """
[[rule]]
name = "high-cpu"
metric = "cpu_usage"
threshold = 90
for = 0

[[rule]]
name = "down"
kind = "worker_inactive"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, text: str = RULES) -> tuple[AlertService, list[Mapping[str, Any]], Clock]:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    events: list[Mapping[str, Any]] = []
    clock = Clock()
    service = AlertService(
        None,
        rules_file=path,
        publish=lambda topic, event: events.append({"topic": topic, **event}),
        clock=clock,
        webhook_senders=[],
    )
    return service, events, clock


async def test_updates_fire_and_resolve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service, events, clock = make(tmp_path)
    await service.load()
    caplog.set_level(logging.INFO, "cloudai.alerts.manager")
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=95), TelemetryEvent.UPDATE)
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=96), TelemetryEvent.UPDATE)
    clock.now += 5
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=10), TelemetryEvent.UPDATE)
    service.on_telemetry(WorkerTelemetry("w1"), TelemetryEvent.INACTIVE)
    assert [(e["topic"], e["rule"], e["state"]) for e in events] == [
        ("alerts", "high-cpu", "firing"),
        ("alerts", "high-cpu", "resolved"),
        ("alerts", "down", "firing"),
    ]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "alert high-cpu on w1: firing" in lines[0]
    assert service.state_counts()[("down", "firing")] == 1
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=5), TelemetryEvent.ACTIVE)
    assert events[-1]["rule"] == "down" and events[-1]["state"] == "resolved"


async def test_a_bad_file_at_start_is_one_line(tmp_path: Path) -> None:
    service, _, _ = make(tmp_path, "[[rule]]\nname = 'x'\n")
    with pytest.raises(RuleError, match=r"rules\.toml: rule .x.: metric must be one of"):
        await service.load()


async def test_reload_keeps_old_rules_on_a_bad_file_and_states_on_a_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, events, _ = make(tmp_path)
    await service.load()
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=95), TelemetryEvent.UPDATE)
    assert service.rules_file is not None
    service.rules_file.write_text("[[rule]]\nname = 'broken'\nthreshold = 'high'\n")
    assert await service.reload_rules_file() is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not reloaded, the old ones stay" in errors[0]
    assert [r.name for r in service.rules()] == ["down", "high-cpu"]
    service.rules_file.write_text(
        RULES + '\n[[rule]]\nname = "mem"\nmetric = "memory_usage"\nthreshold = 1\n'
    )
    assert await service.reload_rules_file() is True
    assert [a.rule.name for a in service.alerts(AlertState.FIRING)] == ["high-cpu"]
    assert len(events) == 1  # no resolution, no re-firing: the state was kept


async def test_api_rules_and_silences(tmp_path: Path) -> None:
    service, events, clock = make(tmp_path)
    await service.load()
    rule = await service.add_rule({"name": "mem", "metric": "memory_usage", "threshold": 50})
    assert rule.source == "api"
    with pytest.raises(AlertsError) as conflict:
        await service.add_rule({"name": "high-cpu", "metric": "cpu_usage", "threshold": 1})
    assert conflict.value.kind == "conflict"
    with pytest.raises(AlertsError) as invalid:
        await service.add_rule({"name": "bad", "metric": "nope", "threshold": 1})
    assert invalid.value.kind == "invalid"
    with pytest.raises(AlertsError) as read_only:
        await service.delete_rule("high-cpu")
    assert read_only.value.kind == "conflict" and "SIGHUP" in read_only.value.message
    silence = await service.add_silence([Matcher.parse("alertname=mem")], clock.now + 60)
    service.on_telemetry(WorkerTelemetry("w1", memory_usage=99), TelemetryEvent.UPDATE)
    assert events == []  # silenced
    assert service.alerts(AlertState.FIRING)[0].silenced
    await service.delete_silence(silence.silence_id)
    service.tick()  # the silence is gone: the firing alert is sent
    assert [e["rule"] for e in events] == ["mem"]
    await service.delete_rule("mem")
    assert events[-1]["state"] == "resolved"
    with pytest.raises(AlertsError):
        await service.delete_rule("mem")


async def test_worker_not_seen_uses_the_telemetry_s_unknown_workers(tmp_path: Path) -> None:
    service, events, clock = make(
        tmp_path, '[[rule]]\nname = "missing"\nkind = "worker_not_seen"\nfor = 10\n'
    )
    await service.load()
    telemetry = TelemetryManager(30.0)
    telemetry.add_known(["w1", "w2"])
    service.attach(telemetry)
    telemetry.register_worker("w1")
    clock.now += 10
    service.tick()
    assert [(e["rule"], e["worker_id"]) for e in events] == [("missing", "w2")]


class SlowHistoryStore:
    """Only what the service asks of a store here; its write of the history waits until
    the test lets it go (a commit under way in the store's thread)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.writing = threading.Event()
        self.go = threading.Event()

    def list_alert_rules(self) -> list[Any]:
        return []

    def list_silences(self) -> list[Any]:
        return []

    def add_alert_events(self, batch: list[Any]) -> None:
        self.writing.set()
        assert self.go.wait(10)
        self.events.extend(batch)

    def list_alert_events(self, rule: str | None, worker_id: str | None, limit: int) -> list[Any]:
        return list(self.events)


async def test_a_history_read_waits_for_a_write_under_way(tmp_path: Path) -> None:
    """A transition already sent (to the topic, a webhook) is in a history read made after
    it, also while the history loop's write of it is still being committed."""
    store = SlowHistoryStore()
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    service = AlertService(store, rules_file=path, webhook_senders=[])  # type: ignore[arg-type]
    await service.load()
    service.on_telemetry(WorkerTelemetry("w1", cpu_usage=95), TelemetryEvent.UPDATE)
    write = asyncio.create_task(service.history_flushed())  # as the history loop does
    assert await asyncio.to_thread(store.writing.wait, 10)
    read = asyncio.create_task(service.history())
    # Nothing lets the write finish: a read that does not wait for it answers at once.
    done, _ = await asyncio.wait({read}, timeout=0.5)
    assert not done
    store.go.set()
    await write
    assert [e.rule for e in await read] == ["high-cpu"]
