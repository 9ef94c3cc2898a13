"""ApiClient and the `cloudai` admin subcommands against a small canned HTTP server on
loopback: what goes over the wire, and how answers and refusals are shown."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudai.api.models import ClusterSummary, Task, TaskLogs, Worker
from cloudai.cli.api_client import ApiClient, ApiError
from cloudai.cli.main import main
from cloudai.task_status import TaskStatus


class FakeMaster:
    """Answers each request from ``routes[(method, path)] = (status, body)``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(body) if body else None,
                    }
                )
                route = self.path.split("?")[0]
                status, payload = fake.routes.get(
                    (self.command, route), (404, {"error": f"no such endpoint: {route}"})
                )
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeMaster]:
    master = FakeMaster()
    yield master
    master.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDAI_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDAI_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "160")


WORKER = {
    "worker_id": "w1",
    "address": "127.0.0.1:50052",
    "registered": True,
    "total_cpu": 8.0,
    "total_memory": 16.0,
    "total_storage": 100.0,
    "total_gpu": 1.0,
    "is_active": True,
    "cpu_usage": 42.0,
    "memory_usage": 33.0,
    "storage_usage": 10.0,
    "gpu_usage": 7.0,
    "running_tasks": [],
    "last_update": 1_700_000_000.5,
}
WORKER_MEASURED: dict[str, object] = {
    **dict.fromkeys(
        (
            "net_rx_bytes_per_sec",
            "net_tx_bytes_per_sec",
            "disk_read_bytes_per_sec",
            "disk_write_bytes_per_sec",
            "load_avg",
            "memory_used_bytes",
            "memory_total_bytes",
            "storage_used_bytes",
            "storage_total_bytes",
            "gpu_memory_used_bytes",
            "gpu_memory_total_bytes",
        )
    ),
    "gpus": [],
    "task_limits": "",
}
"""What a worker view adds (richer telemetry) when the master's answer has none of it."""
TASK = {
    "task_id": "t1",
    "worker_id": "w1",
    "docker_image": "",
    "command": "echo\thi",
    "req_cpu": 1.0,
    "req_memory": 0.0,
    "req_storage": 0.0,
    "req_gpu": 0.0,
    "status": "assigned",
    "message": "accepted",
    "submitted_at": 1_700_000_000.0,
    "started_at": None,
    "finished_at": None,
    "exit_code": None,
    "result_location": "",
}
SUMMARY = {
    "workers": 2,
    "workers_reporting": 1,
    "active_workers": 1,
    "tasks_running": 0,
    "tasks_queued": 0,
    "tasks_finished": 0,
    "tasks_by_status": {},
    "heartbeats": 0,
    "heartbeats_per_second": 0.0,
    "websocket_clients": 0,
    "fanout_tick_ms": 5.0,
}


# -- ApiClient ---------------------------------------------------------------------------------


def test_answers_are_the_apis_models(fake: FakeMaster) -> None:
    fake.routes[("GET", "/api/workers")] = (200, [WORKER])
    fake.routes[("GET", "/api/status")] = (200, SUMMARY)
    fake.routes[("GET", "/api/tasks/t1/logs")] = (
        200,
        {"task_id": "t1", "status": "failure", "exit_code": 3, "logs": "x", "time": 1.0},
    )
    client = ApiClient(fake.url)
    (worker,) = client.workers()
    assert isinstance(worker, Worker) and worker.cpu_usage == 42.0
    assert isinstance(client.status(), ClusterSummary)
    logs = client.logs("t1")
    assert isinstance(logs, TaskLogs) and logs.status is TaskStatus.FAILURE


def test_requests_carry_token_model_body_and_query(fake: FakeMaster) -> None:
    fake.routes[("POST", "/api/workers")] = (201, WORKER)
    fake.routes[("GET", "/api/tasks")] = (200, [TASK])
    client = ApiClient(fake.url, token="tok")
    assert client.register("w1", "127.0.0.1:50052") == Worker.model_validate(WORKER)
    assert client.tasks(status=TaskStatus.RUNNING, worker_id=None) == [Task.model_validate(TASK)]
    register, tasks = fake.requests
    assert register["auth"] == "Bearer tok"
    assert register["content_type"] == "application/json"
    assert register["body"] == {"worker_id": "w1", "address": "127.0.0.1:50052"}
    assert tasks["path"] == "/api/tasks?status=running"


def test_path_segments_are_quoted(fake: FakeMaster) -> None:
    with pytest.raises(ApiError):
        ApiClient(fake.url).task("a/b c")
    assert fake.requests[-1]["path"] == "/api/tasks/a%2Fb%20c"


def test_errors_carry_the_api_message(fake: FakeMaster) -> None:
    fake.routes[("DELETE", "/api/workers/w9")] = (404, {"error": "unknown worker 'w9'"})
    with pytest.raises(ApiError) as info:
        ApiClient(fake.url).unregister("w9")
    assert (info.value.message, info.value.status, info.value.unreachable) == (
        "unknown worker 'w9'",
        404,
        False,
    )


def test_rejected_task_and_non_json_errors(fake: FakeMaster) -> None:
    fake.routes[("POST", "/api/tasks")] = (
        422,
        {**TASK, "status": "rejected", "message": "no room"},
    )
    with pytest.raises(ApiError, match="task t1 rejected: no room") as info:
        ApiClient(fake.url).submit("w1", command="true")
    assert Task.model_validate(info.value.body).status is TaskStatus.REJECTED
    fake.routes[("GET", "/api/status")] = (502, b"<html>bad gateway</html>")
    with pytest.raises(ApiError, match="HTTP 502 Bad Gateway"):
        ApiClient(fake.url).status()


def test_an_answer_that_breaks_the_contract_is_one_line(fake: FakeMaster) -> None:
    fake.routes[("GET", "/api/workers/w1")] = (200, {"worker_id": "w1"})
    with pytest.raises(ApiError) as info:
        ApiClient(fake.url).worker("w1")
    assert info.value.message.startswith(
        f"unexpected answer from the master at {fake.url} to GET /api/workers/w1: address:"
    )
    assert "\n" not in info.value.message and not info.value.unreachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_master() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ApiError) as info:
        ApiClient(url).status()
    assert info.value.unreachable
    assert info.value.message == (
        f"cannot reach the master at {url}: connection refused (is it running? see --url)"
    )


# -- commands ----------------------------------------------------------------------------------


def cloudai(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_workers_table_json_and_plain(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    long_id = "w1-" + "x" * 120  # piped: never cut, whatever the width
    fake.routes[("GET", "/api/workers")] = (200, [{**WORKER, "worker_id": long_id}])
    code, out, _ = cloudai(capsys, "workers", "--url", fake.url)
    assert code == 0 and long_id in out and "42.0%" in out and "active" in out
    code, out, _ = cloudai(capsys, "workers", "--url", fake.url, "--json")
    assert code == 0 and json.loads(out) == [{**WORKER, **WORKER_MEASURED, "worker_id": long_id}]
    code, out, _ = cloudai(capsys, "workers", "--url", fake.url, "--plain")
    header, row = out.splitlines()
    assert header.split("\t") == [
        "worker_id", "address", "state", "cpu_usage", "memory_usage", "storage_usage",
        "gpu_usage", "total_cpu", "total_memory", "total_storage", "total_gpu",
        "running_tasks", "last_update",
    ]  # fmt: skip
    assert row.split("\t") == [
        long_id, "127.0.0.1:50052", "active", "42.0", "33.0", "10.0", "7.0", "8.0", "16.0",
        "100.0", "1.0", "0", "1700000000.5",
    ]  # fmt: skip


def test_plain_tasks_escape_tabs_and_newlines(
    fake: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.routes[("GET", "/api/tasks")] = (200, [TASK])
    code, out, _ = cloudai(capsys, "tasks", "--plain", "--url", fake.url)
    header, row = out.splitlines()
    assert header == (
        "task_id\tworker_id\tstatus\texit_code\tsubmitted_at\tstarted_at\tfinished_at"
        "\tdocker_image\tcommand\tmessage"
    )
    assert row == "t1\tw1\tassigned\t-\t1700000000.0\t-\t-\t\techo\\thi\taccepted"
    fake.routes[("GET", "/api/tasks")] = (200, [])
    code, out, _ = cloudai(capsys, "tasks", "--plain", "--url", fake.url)
    assert (code, out) == (0, header + "\n")


def test_token_from_flag_or_env(
    fake: FakeMaster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.routes[("POST", "/api/workers")] = (201, WORKER)
    assert cloudai(capsys, "register", "w1", "127.0.0.1:1", "--url", fake.url)[0] == 0
    assert fake.requests[-1]["auth"] is None
    monkeypatch.setenv("CLOUDAI_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("CLOUDAI_URL", fake.url)
    assert cloudai(capsys, "register", "w1", "127.0.0.1:1")[0] == 0
    assert fake.requests[-1]["auth"] == "Bearer from-env"
    assert cloudai(capsys, "register", "w1", "127.0.0.1:1", "--token", "flag")[0] == 0
    assert fake.requests[-1]["auth"] == "Bearer flag"


def test_submit_sends_the_resources(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("POST", "/api/tasks")] = (201, TASK)
    code, out, _ = cloudai(
        capsys, "submit", "w1", "--image", "ubuntu", "--cmd", "ls", "--cpu", "2", "--mem", "1.5",
        "--storage", "3", "--gpu", "1", "--id", "t1", "--url", fake.url,
    )  # fmt: skip
    assert code == 0 and out == "task t1 submitted to w1: assigned (accepted)\n"
    assert fake.requests[-1]["body"] == {
        "worker_id": "w1",
        "task_id": "t1",
        "docker_image": "ubuntu",
        "command": "ls",
        "req_cpu": 2.0,
        "req_memory": 1.5,
        "req_storage": 3.0,
        "req_gpu": 1.0,
    }


def test_api_errors_are_one_line(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("POST", "/api/tasks/t1/cancel")] = (
        409,
        {"error": "task t1 already finished (success)"},
    )
    code, out, err = cloudai(capsys, "cancel", "t1", "--url", fake.url)
    assert (code, out, err) == (1, "", "error: task t1 already finished (success)\n")


def test_logs_to_stdout_status_to_stderr(
    fake: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.routes[("GET", "/api/tasks/t1/logs")] = (
        200,
        {
            "task_id": "t1",
            "status": "failure",
            "exit_code": 3,
            "logs": "oops",
            "logs_truncated": True,
            "time": 1.0,
        },
    )
    code, out, err = cloudai(capsys, "logs", "t1", "--url", fake.url)
    assert (code, out) == (0, "oops\n")
    assert err == "task t1: failure, exit code 3 (logs truncated by the worker)\n"


def test_status_and_tasks_tables(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("GET", "/api/status")] = (200, SUMMARY)
    fake.routes[("GET", "/api/tasks")] = (200, [])
    code, out, _ = cloudai(capsys, "status", "--url", fake.url)
    assert code == 0 and "1 active / 2 registered" in out
    code, out, _ = cloudai(capsys, "tasks", "--worker", "w1", "--url", fake.url)
    assert code == 0 and out == "no tasks\n"
    assert fake.requests[-1]["path"] == "/api/tasks?worker_id=w1"


def test_one_task_with_its_earlier_attempts(
    fake: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = {
        "attempt": 1,
        "worker_id": "w2",
        "status": "failure",
        "message": "exit code 3",
        "exit_code": 3,
        "started_at": 10.0,
        "finished_at": 14.0,
    }
    task = {**TASK, "status": "queued", "retries": 2, "attempt": 2, "attempts": [earlier]}
    fake.routes[("GET", "/api/tasks/t1")] = (200, {**task, "retry_at": 9e12, "logs": ""})
    code, out, err = cloudai(capsys, "tasks", "t1", "--url", fake.url)
    assert (code, err) == (0, "")
    assert fake.requests[-1]["path"] == "/api/tasks/t1"
    lines = out.splitlines()
    assert any(line.startswith("Status") and "queued 2/3 retry in" in line for line in lines)
    assert "Earlier attempts" in out
    (run,) = [line for line in lines if "w2" in line]
    assert [cell.strip() for cell in run.split("│")[1:-1]][:5] == [
        "1",
        "w2",
        "failure",
        "3",
        "4.0s",
    ]
    code, out, _ = cloudai(capsys, "tasks", "t1", "--url", fake.url, "--plain")
    header, row = out.splitlines()
    assert header.startswith("task_id\tworker_id\tstatus") and row.startswith("t1\tw1\tqueued")
    code, out, _ = cloudai(capsys, "tasks", "t1", "--url", fake.url, "--json")
    assert json.loads(out)["attempts"] == [earlier]
