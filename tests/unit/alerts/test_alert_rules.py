"""Parsing alert rules and silences: the rules file (TOML) and API bodies; one-line errors."""

from __future__ import annotations

import pytest

from cloudai.alerts.metrics import available_metrics
from cloudai.alerts.rules import (
    Comparison,
    Matcher,
    RuleError,
    RuleKind,
    format_duration,
    make_silence,
    parse_duration,
    parse_rules,
    rule_from_spec,
)

EXAMPLE = """
[[rule]]
name = "high-cpu"
metric = "cpu_usage"
comparison = ">"
threshold = 90
resolve_threshold = 85
for = "30s"
severity = "critical"
workers = "gpu-*"
repeat_interval = "1h"
summary = "CPU above 90 % on {worker_id}"
labels = { team = "infra" }

[[rule]]
name = "worker-down"
kind = "worker_inactive"

[[rule]]
name = "worker-missing"
kind = "worker_not_seen"
for = "2m"
workers = ["w1", "w2"]
"""


def test_the_example_file() -> None:
    cpu, down, missing = parse_rules(EXAMPLE)
    assert cpu.comparison is Comparison.GT and cpu.threshold == 90 and cpu.resolve_at == 85
    assert cpu.for_seconds == 30 and cpu.repeat_interval == 3600 and cpu.severity == "critical"
    assert cpu.labels == (("team", "infra"),)
    assert cpu.workers.matches("gpu-7") and not cpu.workers.matches("cpu-1")
    assert cpu.describe() == "cpu_usage > 90 for 30s"
    assert down.kind is RuleKind.WORKER_INACTIVE and down.workers.matches("anything")
    assert missing.for_seconds == 120 and missing.workers.ids == frozenset({"w1", "w2"})
    # round trip through the spec the API and the store use
    assert rule_from_spec(cpu.to_spec()) == cpu
    assert rule_from_spec(missing.to_spec()) == missing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\n", "threshold is required"),
        ("[[rule]]\nname = 'a'\nmetric = 'cpu'\nthreshold = 1\n", "metric must be one of"),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 1\nop = '>'\n",
            "unknown field 'op'",
        ),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 1\ncomparison = '=='\n",
            "comparison",
        ),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 90\nresolve_threshold = 95\n",
            "resolve_threshold must be <=",
        ),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 1\nfor = 'soon'\n",
            "for: expected a duration",
        ),
        (
            "[[rule]]\nname = 'a'\nkind = 'worker_inactive'\nthreshold = 1\n",
            "threshold does not apply",
        ),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 1\nseverity = 'meh'\n",
            "severity",
        ),
        (
            "[[rule]]\nname = 'a'\nmetric = 'cpu_usage'\nthreshold = 1\n"
            "labels = {severity = 'x'}\n",
            "set by the master",
        ),
        ("[[rule]]\nname = 'a b'\n", "rule name must be"),
        (
            "[[rule]]\nname = 'a'\nkind = 'worker_inactive'\n"
            "[[rule]]\nname = 'a'\nkind = 'worker_inactive'\n",
            "two rules are named 'a'",
        ),
        ("[rules]\n", "unknown table 'rules'"),
        ("[[rule]\n", "not valid TOML"),
    ],
)
def test_bad_rules_are_one_line(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_richer_metrics_are_accepted_when_the_telemetry_has_them() -> None:
    metrics = available_metrics()
    assert {"cpu_usage", "running_tasks"} <= metrics
    if "load_avg_1m" in metrics:
        rule = rule_from_spec(
            {"name": "load", "metric": "load_avg_1m", "threshold": 8}, metrics=metrics
        )
        assert rule.metric == "load_avg_1m"


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("1h30m") == 5400
    assert parse_duration(2.5) == 2.5 and parse_duration("500ms") == 0.5
    assert format_duration(90) == "1m30s" and format_duration(0.5) == "500ms"
    for bad in ("", "-1s", True, "1x", 10**9):
        with pytest.raises(RuleError):
            parse_duration(bad)


def test_matchers() -> None:
    labels = {"alertname": "high-cpu", "worker_id": "gpu-3", "severity": "critical"}
    assert Matcher.parse("alertname=high-cpu").matches(labels)
    assert Matcher.parse('worker_id=~"gpu-.*"').matches(labels)
    assert not Matcher.parse("worker_id=~gpu").matches(labels)  # the whole value
    assert Matcher.parse("severity!=info").matches(labels)
    assert Matcher.parse("team!~infra").matches(labels)  # missing label: ""
    for bad in ("no-operator", "worker_id=~(", "1abc=x"):
        with pytest.raises(RuleError):
            Matcher.parse(bad)


def test_silences() -> None:
    matcher = Matcher.parse("alertname=x")
    silence = make_silence("s", [matcher], 200.0, starts_at=100.0)
    assert silence.state(50) == "pending" and silence.state(150) == "active"
    assert silence.state(200) == "expired" and not silence.active(200)
    with pytest.raises(RuleError):
        make_silence("s", [], 200.0, starts_at=100.0)
    with pytest.raises(RuleError):
        make_silence("s", [matcher], 100.0, starts_at=100.0)
