"""The alert engine: states per (rule, worker), for, hysteresis, repeats, silences,
reloads, built-in rules. Pure: times are passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cloudai.alerts.engine import AlertEngine, AlertState, Transition
from cloudai.alerts.metrics import telemetry_getter
from cloudai.alerts.rules import (
    Matcher,
    Rule,
    RuleKind,
    WorkerSelector,
    make_silence,
    rule_from_spec,
)
from cloudai.telemetry.model import TaskTelemetry, WorkerTelemetry

T0 = 1_000_000.0


@dataclass
class Sample:
    worker_id: str
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    running_tasks: list[object] = field(default_factory=list)


def cpu_rule(**kw: object) -> Rule:
    spec: dict[str, object] = {
        "name": "high-cpu",
        "metric": "cpu_usage",
        "comparison": ">",
        "threshold": 90,
        "for": 30,
    }
    spec.update(kw)
    return rule_from_spec(spec)


def states(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.worker_id, str(t.old), str(t.new)) for t in transitions]


def test_pending_then_firing_after_for() -> None:
    engine = AlertEngine([cpu_rule()], started_at=T0)
    assert engine.observe(Sample("w1", 95), T0) == []
    assert engine.get("high-cpu", "w1").state is AlertState.PENDING
    assert engine.tick(T0 + 29) == []
    fired = engine.tick(T0 + 30)
    assert states(fired) == [("w1", "pending", "firing")]
    assert fired[0].notifies and fired[0].recorded
    assert fired[0].labels == {"alertname": "high-cpu", "worker_id": "w1", "severity": "warning"}
    assert fired[0].value == 95


def test_firing_on_an_update_once_for_has_passed() -> None:
    engine = AlertEngine([cpu_rule()], started_at=T0)
    engine.observe(Sample("w1", 95), T0)
    assert states(engine.observe(Sample("w1", 96), T0 + 31)) == [("w1", "pending", "firing")]
    assert engine.observe(Sample("w1", 97), T0 + 32) == []  # one notification per transition


def test_no_for_fires_at_once() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0})], started_at=T0)
    assert states(engine.observe(Sample("w1", 91), T0)) == [("w1", "pending", "firing")]


def test_pending_clears_when_the_condition_stops() -> None:
    engine = AlertEngine([cpu_rule()], started_at=T0)
    engine.observe(Sample("w1", 95), T0)
    assert engine.observe(Sample("w1", 50), T0 + 10) == []
    assert engine.get("high-cpu", "w1") is None
    engine.observe(Sample("w1", 95), T0 + 20)
    assert engine.tick(T0 + 49) == []  # `for` counts from the new episode
    assert states(engine.tick(T0 + 50)) == [("w1", "pending", "firing")]


def test_hysteresis_suppresses_flapping_at_the_threshold() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0, "resolve_threshold": 80})], started_at=T0)
    sent = engine.observe(Sample("w1", 91), T0)
    for i, value in enumerate([89, 91, 88, 92, 85, 90.5, 81]):
        sent += engine.observe(Sample("w1", value), T0 + 1 + i)
    assert states(sent) == [("w1", "pending", "firing")]  # never resolved, never re-fired
    resolved = engine.observe(Sample("w1", 80), T0 + 10)
    assert states(resolved) == [("w1", "firing", "resolved")]
    assert resolved[0].ends_at == T0 + 10
    assert engine.get("high-cpu", "w1").state is AlertState.RESOLVED


def test_without_hysteresis_it_resolves_below_the_threshold() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0})], started_at=T0)
    engine.observe(Sample("w1", 91), T0)
    assert states(engine.observe(Sample("w1", 90), T0 + 1)) == [("w1", "firing", "resolved")]
    # a new breach after resolution starts a new episode
    assert states(engine.observe(Sample("w1", 95), T0 + 2)) == [("w1", "pending", "firing")]


def test_repeat_interval_while_firing() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0, "repeat_interval": 60})], started_at=T0)
    engine.observe(Sample("w1", 95), T0)
    assert engine.tick(T0 + 59) == []
    repeated = engine.tick(T0 + 60)
    assert len(repeated) == 1 and repeated[0].repeat and repeated[0].notifies
    assert not repeated[0].recorded  # repeats are not history
    assert engine.tick(T0 + 100) == []
    assert len(engine.tick(T0 + 120)) == 1


def test_silenced_alert_sends_nothing_but_is_tracked() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0, "repeat_interval": 60})], started_at=T0)
    silence = make_silence(
        "s1",
        [Matcher.parse("alertname=high-cpu"), Matcher.parse("worker_id=~w[0-9]")],
        T0 + 100,
        starts_at=T0,
    )
    engine.add_silence(silence)
    fired = engine.observe(Sample("w1", 95), T0)
    assert states(fired) == [("w1", "pending", "firing")]
    assert fired[0].silenced and not fired[0].notifies and fired[0].recorded
    assert engine.get("high-cpu", "w1").state is AlertState.FIRING
    assert engine.tick(T0 + 90) == []  # no repeats while silenced
    # the silence ends: the still-firing alert is sent
    after = engine.tick(T0 + 100)
    assert len(after) == 1 and after[0].notifies
    # not matched: another worker's label
    engine.add_silence(make_silence("s2", [Matcher.parse("worker_id=w9")], T0 + 500, starts_at=T0))
    assert engine.observe(Sample("w2", 95), T0 + 101)[0].notifies


def test_resolution_of_a_silenced_firing_is_not_sent() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0})], started_at=T0)
    engine.add_silence(
        make_silence("s", [Matcher.parse("severity=warning")], T0 + 50, starts_at=T0)
    )
    engine.observe(Sample("w1", 95), T0)
    resolved = engine.observe(Sample("w1", 10), T0 + 200)
    assert states(resolved) == [("w1", "firing", "resolved")]
    assert not resolved[0].notifies and resolved[0].recorded


def test_selector_and_running_tasks_metric() -> None:
    rule = rule_from_spec(
        {
            "name": "busy",
            "metric": "running_tasks",
            "comparison": ">=",
            "threshold": 2,
            "workers": "gpu-*",
        }
    )
    engine = AlertEngine([rule], started_at=T0, getter_for=telemetry_getter)
    busy = [TaskTelemetry("a"), TaskTelemetry("b")]
    assert engine.observe(WorkerTelemetry("cpu-1", running_tasks=busy), T0) == []
    assert states(engine.observe(WorkerTelemetry("gpu-1", running_tasks=busy), T0)) == [
        ("gpu-1", "pending", "firing")
    ]
    ids = Rule("x", metric="cpu_usage", workers=WorkerSelector(ids=frozenset({"a"})))
    assert ids.workers.matches("a") and not ids.workers.matches("b")


def test_a_metric_the_worker_does_not_send_is_not_judged() -> None:
    rule = rule_from_spec(
        {"name": "net", "metric": "net_rx_bytes_per_sec", "threshold": 1e6},
        metrics={"net_rx_bytes_per_sec"},
    )
    engine = AlertEngine([rule], started_at=T0, getter_for=telemetry_getter)
    assert engine.observe(WorkerTelemetry("w1", cpu_usage=100), T0) == []
    assert engine.alerts() == []


def test_reload_keeps_the_states_of_unchanged_rules() -> None:
    cpu, mem = (
        cpu_rule(**{"for": 0}),
        rule_from_spec({"name": "mem", "metric": "memory_usage", "threshold": 80}),
    )
    engine = AlertEngine([cpu, mem], started_at=T0)
    engine.observe(Sample("w1", 95, 90), T0)
    assert engine.get("high-cpu", "w1").state is AlertState.FIRING
    assert engine.get("mem", "w1").state is AlertState.FIRING
    # same cpu rule (a new but equal object), mem changed, a new rule added
    mem2 = rule_from_spec({"name": "mem", "metric": "memory_usage", "threshold": 85})
    new = rule_from_spec({"name": "new", "metric": "cpu_usage", "threshold": 10})
    ended = engine.set_rules([cpu_rule(**{"for": 0}), mem2, new], T0 + 5)
    assert [(t.rule.name, str(t.new), t.reason) for t in ended] == [
        ("mem", "resolved", "rule changed")
    ]
    assert engine.get("high-cpu", "w1").state is AlertState.FIRING
    assert engine.get("high-cpu", "w1").fired_at == T0
    assert engine.observe(Sample("w1", 95, 90), T0 + 6)  # mem2 and new start afresh
    removed = engine.set_rules([], T0 + 7)
    assert {(t.rule.name, t.reason) for t in removed} == {
        ("high-cpu", "rule removed"),
        ("mem", "rule removed"),
        ("new", "rule removed"),
    }
    assert engine.alerts() == []


def test_worker_removed_resolves_its_alerts() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0})], started_at=T0)
    engine.observe(Sample("w1", 95), T0)
    engine.observe(Sample("w2", 95), T0)
    gone = engine.worker_removed("w1", T0 + 1)
    assert [(t.worker_id, str(t.new), t.reason) for t in gone] == [
        ("w1", "resolved", "worker removed")
    ]
    assert engine.get("high-cpu", "w1") is None
    assert [a.worker_id for a in engine.alerts(AlertState.FIRING)] == ["w2"]


def test_worker_inactive_builtin() -> None:
    rule = rule_from_spec({"name": "down", "kind": "worker_inactive", "severity": "critical"})
    assert rule.kind is RuleKind.WORKER_INACTIVE
    engine = AlertEngine([rule], started_at=T0)
    assert states(engine.worker_inactive("w1", T0)) == [("w1", "pending", "firing")]
    assert engine.worker_inactive("w1", T0 + 1) == []  # de-duplicated
    back = engine.worker_active("w1", T0 + 2)
    assert states(back) == [("w1", "firing", "resolved")]
    assert states(engine.worker_inactive("w1", T0 + 3)) == [("w1", "pending", "firing")]


def test_worker_not_seen_since_the_start() -> None:
    rule = rule_from_spec({"name": "missing", "kind": "worker_not_seen", "for": 60})
    engine = AlertEngine([rule], started_at=T0)
    engine.known_workers(["w1", "w2", "w3"])
    engine.observe(Sample("w1"), T0 + 10)
    assert engine.tick(T0 + 59) == []
    fired = engine.tick(T0 + 60)
    assert sorted(t.worker_id for t in fired) == ["w2", "w3"]
    assert engine.tick(T0 + 61) == []
    assert states(engine.observe(Sample("w2"), T0 + 70)) == [("w2", "firing", "resolved")]
    assert engine.worker_removed("w3", T0 + 71)[0].reason == "worker removed"


def test_resolved_alerts_are_forgotten_after_the_retention() -> None:
    engine = AlertEngine([cpu_rule(**{"for": 0})], started_at=T0, resolved_retention=60)
    engine.observe(Sample("w1", 95), T0)
    engine.observe(Sample("w1", 5), T0 + 1)
    engine.tick(T0 + 60)
    assert [a.state for a in engine.alerts()] == [AlertState.RESOLVED]
    engine.tick(T0 + 61)
    assert engine.alerts() == []


def test_state_counts() -> None:
    engine = AlertEngine([cpu_rule()], started_at=T0)
    engine.observe(Sample("w1", 95), T0)
    engine.observe(Sample("w2", 95), T0)
    engine.tick(T0 + 30)
    engine.observe(Sample("w3", 95), T0 + 31)
    assert engine.state_counts() == {
        ("high-cpu", "pending"): 1,
        ("high-cpu", "firing"): 2,
        ("high-cpu", "resolved"): 0,
    }


@pytest.mark.parametrize(
    ("op", "value", "fires"), [(">=", 90, True), ("<", 5, True), ("<=", 11, False)]
)
def test_comparisons(op: str, value: float, fires: bool) -> None:
    threshold = 90 if op.startswith(">") else 10
    rule = rule_from_spec(
        {"name": "r", "metric": "cpu_usage", "comparison": op, "threshold": threshold}
    )
    engine = AlertEngine([rule], started_at=T0)
    assert bool(engine.observe(Sample("w1", value), T0)) is fires
