"""`cloudai watch`: its one-line rendering of a worker and its URLs (pure)."""

from __future__ import annotations

import argparse

from cloudai.cli import watch
from cloudai.cli.watch import format_worker, stream_url

NOW = 1_000_000.0


def test_format_worker() -> None:
    line = format_worker(
        {
            "worker_id": "w1",
            "is_active": True,
            "cpu_usage": 42.0,
            "memory_usage": 33.0,
            "gpu_usage": 7.0,
            "running_tasks": [{"task_id": "t1"}],
            "last_update": NOW - 4,
        },
        now=NOW,
    )
    assert line.split() == [
        "w1",
        "active",
        "cpu",
        "42.0%",
        "mem",
        "33.0%",
        "gpu",
        "7.0%",
        "tasks",
        "1",
        "seen",
        "4.0s",
        "ago",
    ]


def test_a_worker_never_seen_has_no_figures() -> None:
    """No heartbeat since the master started: the usage is unknown, not 0 %."""
    line = format_worker(
        {"worker_id": "w9", "is_active": False, "cpu_usage": 0.0, "last_update": None}, now=NOW
    )
    assert "0.0%" not in line
    assert line.split()[2:8] == ["cpu", "-", "mem", "-", "gpu", "-"]
    assert line.endswith("never seen")


def test_stream_url() -> None:
    assert stream_url("http://m:8080", None) == "ws://m:8080/ws/telemetry"
    assert stream_url("https://m/", "w1") == "wss://m/ws/telemetry/w1"
    assert stream_url("ws://m:8080/ws/telemetry", None) == "ws://m:8080/ws/telemetry"


def test_help_is_one_line_each() -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    watch.register(subparsers)
    from cloudai.cli import top

    top.register(subparsers)
    for name in ("watch", "top"):
        sub = subparsers.choices[name]
        assert sub.description and "\n" not in sub.description
        action = next(a for a in subparsers._choices_actions if a.dest == name)
        assert action.help and "\n" not in action.help and len(action.help) < 80
