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
    assert views.format_percent(None) == "-"
    assert views.format_percent(float("inf")) == "-"
    assert views.format_amount(8.0, "cores") == "8 cores"
    assert views.format_amount(None) == "-"
    assert views.format_bytes(10 * 1024 * 1024) == "10.0 MiB"
    assert views.format_bytes(12) == "12 B"
    assert views.format_bytes(None) == "-"
    assert [views.format_gib(v) for v in (0.25, 15.5, 16.0, 251.4, None)] == [
        "0.2",
        "15.5",
        "16",
        "251",
        "-",
    ]
    assert views.plural(1, "core") == "1 core" and views.plural(8, "core") == "8 cores"
    assert views.ago(None, NOW) == "never"
    assert views.ago(NOW - 2, NOW) == "2.0s ago"
    assert views.usage_style(10) == "green"
    assert views.usage_style(70) == "yellow"
    assert views.usage_style(90) == "red"


def test_task_statuses_are_the_task_status_values() -> None:
    from cloudai.task_status import TaskStatus

    assert tuple(status.value for status in TaskStatus) == views.TASK_STATUSES
    assert "running" in views.TASK_STATUSES


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


def lines_of(text: str) -> str:
    """The text without the spaces rich pads lines with."""
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def cells_of(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("│")[1:-1]]


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if "│" in line]


def test_workers_table_sorted_with_every_column() -> None:
    rows = [worker(worker_id="w2", is_active=False), worker(worker_id="[bold]w1")]
    text = views.render_text(views.workers_table(rows, NOW), width=120)
    header = next(line for line in text.splitlines() if "┃" in line)
    assert cells_of(header.replace("┃", "│")) == [
        "ID",
        "Address",
        "Active",
        "CPU",
        "Mem (GiB)",
        "Disk (GiB)",
        "GPU",
        "Tasks",
        "Heartbeat",
    ]
    lines = table_rows(text)
    assert "[bold]w1" in lines[0]  # data is never read as markup; sorted by id
    assert cells_of(lines[0]) == [
        "[bold]w1",
        "10.0.0.5:50052",
        "active",
        "42.0% of 8",  # cores
        "33.0% 5.3/16",  # GiB used / total
        "20.0% 20/100",
        "7.0% of 1",
        "1",
        "3.0s ago",
    ]
    assert "inactive" in lines[1]
    assert views.render_text(views.workers_table([], NOW)).startswith("no workers registered")


def test_workers_table_drops_detail_before_anything_else_when_narrow() -> None:
    rows = [worker()]
    medium = cells_of(table_rows(views.render_text(views.workers_table(rows, NOW), 100))[0])
    assert medium[3:7] == ["42.0% of 8", "33.0% 5.3/16", "7.0% of 1", "1"]  # no storage
    compact = cells_of(table_rows(views.render_text(views.workers_table(rows, NOW), 80))[0])
    assert compact[3:7] == ["42.0%", "33.0%", "7.0%", "1"]  # percentages alone
    narrow = views.render_text(views.workers_table(rows, NOW), 70)
    assert all(len(line) <= 70 for line in narrow.splitlines())  # squeezed, ids whole
    assert cells_of(table_rows(narrow)[0])[0] == "w1"


def test_unknown_usage_is_a_dash_never_zero() -> None:
    """Never seen since the master started (last_update null): usage unknown, not 0 %."""
    silent = worker(
        worker_id="w9",
        is_active=False,
        registered=False,
        last_update=None,
        cpu_usage=0.0,
        memory_usage=0.0,
        storage_usage=0.0,
        gpu_usage=0.0,
        total_gpu=0,
        running_tasks=[],
    )
    wide = views.render_text(views.workers_table([silent], NOW), width=140)
    assert cells_of(table_rows(wide)[0]) == [
        "w9",
        "10.0.0.5:50052",
        "waiting",
        "- of 8",
        "- of 16",
        "- of 100",
        "none",  # a machine without a GPU
        "0",
        "never",
    ]
    compact = views.render_text(views.workers_table([silent], NOW), width=80)
    assert cells_of(table_rows(compact)[0])[3:6] == ["-", "-", "none"]
    assert "0.0%" not in wide + compact
    detail = views.render_text(views.worker_detail(silent, NOW), width=100)
    assert "CPU             - of 8 cores" in detail
    assert "Memory          - of 16 GiB\n" in lines_of(detail)
    assert "0.0%" not in detail
    # A value that is absent or not a number is unknown too.
    absent = worker(cpu_usage=None, memory_usage="?", total_memory=None)
    cells = cells_of(table_rows(views.render_text(views.workers_table([absent], NOW), 140))[0])
    assert cells[3:5] == ["- of 8", "-"]


def test_ids_are_never_cut() -> None:
    """Piped output (no terminal) has a fixed width: a long id still comes out whole."""
    long_id = "worker-" + "0123456789abcdef" * 3 + "-abcde"
    assert len(long_id) == 61
    rows = [worker(worker_id=long_id), worker(worker_id="w2")]
    for width in (40, 80, 100, 200):
        text = views.render_text(views.workers_table(rows, NOW), width=width)
        assert long_id in text, text
        assert "…" not in text
        detail = views.render_text(views.worker_detail(rows[0], NOW), width=width)
        assert long_id in detail
    task_id = "task-" + "f" * 60
    tasks = [
        {
            "task_id": task_id,
            "worker_id": long_id,
            "command": "sleep 1",
            "status": "running",
            "submitted_at": NOW - 1,
        }
    ]
    text = views.render_text(views.tasks_table(tasks, NOW), width=80)
    assert task_id in text and long_id in text
    running = worker(running_tasks=[{"task_id": task_id, "status": "running"}])
    assert task_id in views.render_text(views.worker_detail(running, NOW), width=60)


def test_worker_detail() -> None:
    text = views.render_text(views.worker_detail(worker(), NOW), width=120)
    assert "CPU             42.0% of 8 cores" in text
    assert "Memory          33.0% of 16 GiB (5.3 GiB used)" in text
    assert "Storage         20.0% of 100 GiB (20 GiB used)" in text
    assert "GPU             7.0% of 1 GPU" in text
    assert "GB" not in text.replace("GiB", "")
    assert "Mem alloc (GiB)" in text
    assert "t1" in text
    text = views.render_text(views.worker_detail(worker(running_tasks=[]), NOW))
    assert "no running tasks" in text
    text = views.render_text(views.worker_detail(worker(total_gpu=0, total_cpu=1), NOW))
    assert "GPU             none (no GPU)" in text and "of 1 core\n" in lines_of(text)


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


def test_a_task_waiting_for_its_next_attempt_says_when() -> None:
    task = {"status": "queued", "retries": 2, "attempt": 2, "retry_at": NOW + 12.4}
    assert views.task_status_cell(task, NOW).plain == "queued 2/3 retry in 12s"
    assert views.task_status_cell({**task, "retry_at": None}, NOW).plain == "queued 2/3"


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
