"""ApiClient and the `cloudai` admin subcommands against a small canned HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudai.cli.api_client import ApiClient, ApiError, base_url
from cloudai.cli.main import main


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
    "is_active": True,
    "cpu_usage": 42.0,
    "memory_usage": 33.0,
    "gpu_usage": 7.0,
    "running_tasks": [],
    "last_update": None,
}


# -- ApiClient ---------------------------------------------------------------------------------


def test_base_url() -> None:
    assert base_url("http://m:8080/") == "http://m:8080"
    assert base_url("m:8080") == "http://m:8080"
    assert base_url("ws://m:8080") == "http://m:8080"
    assert base_url("wss://m") == "https://m"
    assert base_url(None) == "http://127.0.0.1:8080"


def test_base_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDAI_URL", "http://elsewhere:1")
    assert base_url(None) == "http://elsewhere:1"


def test_requests_carry_token_body_and_query(fake: FakeMaster) -> None:
    fake.routes[("POST", "/api/workers")] = (201, WORKER)
    fake.routes[("GET", "/api/tasks")] = (200, [])
    client = ApiClient(fake.url, token="tok")
    assert client.register("w1", "127.0.0.1:50052") == WORKER
    assert client.tasks(status="running", worker_id=None) == []
    register, tasks = fake.requests
    assert register["auth"] == "Bearer tok"
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
        {"task_id": "t1", "status": "rejected", "message": "no room"},
    )
    with pytest.raises(ApiError, match="task t1 rejected: no room"):
        ApiClient(fake.url).submit("w1", command="true")
    fake.routes[("GET", "/api/status")] = (502, b"<html>bad gateway</html>")
    with pytest.raises(ApiError, match="HTTP 502 Bad Gateway"):
        ApiClient(fake.url).status()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_workers_table_and_json(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("GET", "/api/workers")] = (200, [WORKER])
    code, out, _ = cloudai(capsys, "workers", "--url", fake.url)
    assert code == 0 and "w1" in out and "42.0%" in out and "active" in out
    code, out, _ = cloudai(capsys, "workers", "--url", fake.url, "--json")
    assert code == 0 and json.loads(out) == [WORKER]


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
    fake.routes[("POST", "/api/tasks")] = (
        201,
        {"task_id": "t1", "worker_id": "w1", "status": "assigned", "message": "accepted"},
    )
    code, out, _ = cloudai(
        capsys, "submit", "w1", "--image", "ubuntu", "--cmd", "ls", "--cpu", "2", "--mem", "1.5",
        "--storage", "3", "--gpu", "1", "--id", "t1", "--url", fake.url,
    )  # fmt: skip
    assert code == 0 and out == "task t1 submitted to w1: assigned (accepted)\n"
    assert fake.requests[-1]["body"] == {
        "worker_id": "w1",
        "docker_image": "ubuntu",
        "command": "ls",
        "req_cpu": 2.0,
        "req_memory": 1.5,
        "req_storage": 3.0,
        "req_gpu": 1.0,
        "task_id": "t1",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "w1", "--cmd", "x", "--cpu", "lots"],
        ["submit", "w1", "--cmd", "x", "--mem", "-1"],
        ["tasks", "--status", "bogus"],
        ["register"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


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
        },
    )
    code, out, err = cloudai(capsys, "logs", "t1", "--url", fake.url)
    assert (code, out) == (0, "oops\n")
    assert err == "task t1: failure, exit code 3 (logs truncated by the worker)\n"


def test_status_and_tasks_tables(fake: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake.routes[("GET", "/api/status")] = (
        200,
        {"workers": 2, "active_workers": 1, "tasks_running": 0, "tasks_queued": 0,
         "tasks_finished": 0, "heartbeats": 0, "heartbeats_per_second": 0.0},
    )  # fmt: skip
    fake.routes[("GET", "/api/tasks")] = (200, [])
    code, out, _ = cloudai(capsys, "status", "--url", fake.url)
    assert code == 0 and "1 active / 2 registered" in out
    code, out, _ = cloudai(capsys, "tasks", "--worker", "w1", "--url", fake.url)
    assert code == 0 and out == "no tasks\n"
    assert fake.requests[-1]["path"] == "/api/tasks?worker_id=w1"
