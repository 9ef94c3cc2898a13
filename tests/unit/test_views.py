"""Pure renderings shared by the console and the `cloudai` client."""

from __future__ import annotations

import pytest

from cloudai import views

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (float("nan"), "never"),
        (-3.0, "0.0s"),
        (0.44, "0.4s"),
        (12.9, "12s"),
        (185, "3m05s"),
        (7440, "2h04m"),
        (3 * 86400 + 7200, "3d02h"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert views.format_age(seconds) == text


def test_small_formatters() -> None:
    assert views.format_percent(12.345) == "12.3%"
    assert views.format_percent("x") == "-"
    assert views.format_amount(8.0, "cores") == "8 cores"
    assert views.format_amount(None) == "-"
    assert views.format_bytes(10 * 1024 * 1024) == "10.0 MiB"
    assert views.format_bytes(12) == "12 B"
    assert views.ago(None, NOW) == "never"
    assert views.ago(NOW - 2, NOW) == "2.0s ago"
    assert views.usage_style(10) == "green"
    assert views.usage_style(70) == "yellow"
    assert views.usage_style(90) == "red"


def worker(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "worker_id": "w1",
        "address": "10.0.0.5:50052",
        "registered": True,
        "is_active": True,
        "cpu_usage": 42.0,
        "memory_usage": 33.0,
        "gpu_usage": 7.0,
        "storage_usage": 20.0,
        "total_cpu": 8,
        "total_memory": 16,
        "total_storage": 100,
        "total_gpu": 1,
        "running_tasks": [{"task_id": "t1", "status": "running", "cpu_allocated": 1}],
        "last_update": NOW - 3,
    }
    base.update(fields)
    return base


def test_worker_states() -> None:
    assert views.worker_state(worker())[0] == "active"
    assert views.worker_state(worker(is_active=False))[0] == "inactive"
    assert views.worker_state(worker(is_active=False, registered=False, last_update=None))[0] == (
        "waiting"
    )


def test_workers_table_sorted_with_every_column() -> None:
    rows = [worker(worker_id="w2", is_active=False), worker(worker_id="[bold]w1")]
    text = views.render_text(views.workers_table(rows, NOW), width=120)
    lines = [line for line in text.splitlines() if "│" in line]
    assert "[bold]w1" in lines[0]  # data is never read as markup; sorted by id
    cells = [c.strip() for c in lines[0].split("│")[1:-1]]
    assert cells == [
        "[bold]w1",
        "10.0.0.5:50052",
        "active",
        "42.0%",
        "33.0%",
        "7.0%",
        "1",
        "3.0s ago",
    ]
    assert "inactive" in lines[1]
    assert views.render_text(views.workers_table([], NOW)).startswith("no workers registered")


def test_worker_detail() -> None:
    text = views.render_text(views.worker_detail(worker(), NOW), width=120)
    assert "CPU             42.0% of 8 cores" in text
    assert "GPU             7.0% of 1 GPUs" in text
    assert "t1" in text
    text = views.render_text(views.worker_detail(worker(running_tasks=[]), NOW))
    assert "no running tasks" in text


def test_tasks_table() -> None:
    tasks = [
        {
            "task_id": "t2",
            "worker_id": "w1",
            "docker_image": "ubuntu",
            "command": "",
            "status": "failure",
            "submitted_at": NOW - 5,
            "exit_code": 2,
            "message": "boom",
        },
        {
            "task_id": "t1",
            "worker_id": "w1",
            "docker_image": "",
            "command": "echo hi",
            "status": "success",
            "submitted_at": NOW - 65,
            "exit_code": 0,
            "message": "",
        },
    ]
    text = views.render_text(views.tasks_table(tasks, NOW), width=140)
    lines = [line for line in text.splitlines() if "│" in line]
    assert [c.strip() for c in lines[0].split("│")[1:-1]] == [
        "t1",
        "w1",
        "$ echo hi",
        "success",
        "1m05s ago",
        "0",
        "",
    ]
    assert "ubuntu" in lines[1] and "failure" in lines[1] and "boom" in lines[1]
    assert views.render_text(views.tasks_table([], NOW)) == "no tasks\n"


def test_status_panel() -> None:
    text = views.render_text(
        views.status_panel(
            {
                "workers": 3,
                "active_workers": 2,
                "tasks_running": 1,
                "tasks_queued": 4,
                "tasks_finished": 5,
                "tasks_by_status": {"running": 1, "queued": 4, "success": 5},
                "heartbeats": 1234,
                "heartbeats_per_second": 9.5,
                "websocket_clients": 2,
            }
        )
    )
    assert "2 active / 3 registered" in text
    assert "1 running, 4 queued, 5 finished" in text
    assert "queued 4, running 1, success 5" in text
    assert "9.5 heartbeats/s (1234 total)" in text


def test_task_logs() -> None:
    text = views.render_text(
        views.task_logs(
            {
                "task_id": "t1",
                "status": "success",
                "exit_code": 0,
                "logs": "a\n[b]\n",
                "logs_truncated": True,
            }
        )
    )
    assert text == "task t1: success, exit code 0\na\n[b]\n(logs truncated by the worker)\n"
    text = views.render_text(views.task_logs({"task_id": "t1", "status": "running"}))
    assert text == "task t1: running\n(no logs yet)\n"


def test_color_rendering_has_escapes_only_when_asked() -> None:
    table = views.workers_table([worker()], NOW)
    assert "\x1b[" in views.render_text(table, color=True)
    assert "\x1b[" not in views.render_text(table, color=False)


def test_long_lines_are_not_broken() -> None:
    from rich.text import Text

    line = "error: " + "x" * 300
    assert views.render_text(Text(line), width=80) == line + "\n"
