"""The `cloudai` admin subcommands against a real master and a real worker process."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cloudai.cli.api_client import ApiClient
from cloudai.cli.main import main
from tests.harness import (
    PERCENT,
    Process,
    child_env,
    cloudai_command,
    plausible_percent,
    start_master,
    start_worker,
    wait_heartbeat,
    wait_until,
)

TOKEN = "client-test-token"
FAST = ("--interval", "0.3")


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDAI_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDAI_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "160")


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path)
    yield process
    process.kill()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Process]:
    process = start_worker(tmp_path, "w1", *FAST)  # waits for the master's MasterRegister
    yield process
    process.kill()


def cloudai(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_operator_flow(
    master: Process, worker: Process, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", master.extra["http"])
    api = ApiClient(master.extra["http"])

    address = worker.extra["address"]
    code, out, err = cloudai(capsys, "register", "w1", address, *url)
    assert code == 0, err
    assert f"worker w1 authorised at {address}" in out
    wait_heartbeat(master.extra["http"], "w1")

    code, out, _ = cloudai(capsys, "workers", *url)
    assert code == 0
    row = re.search(rf"w1\s*│\s*{re.escape(address)}\s*│\s*active\s*│\s*{PERCENT}", out)
    assert row, out
    plausible_percent(row[1])  # the machine's CPU: it varies
    code, out, _ = cloudai(capsys, "workers", "w1", *url)
    detail = re.search(rf"CPU\s+{PERCENT} of (\d+) cores", out)
    assert code == 0 and detail, out
    plausible_percent(detail[1])
    assert int(detail[2]) == psutil.cpu_count()
    code, out, _ = cloudai(capsys, "workers", "--json", *url)
    assert json.loads(out)[0]["worker_id"] == "w1"

    code, out, _ = cloudai(capsys, "status", *url)
    assert code == 0 and re.search(r"Workers\s+1 active / 1 registered", out), out

    # Tasks through the API: one that finishes, one that is cancelled.
    code, out, err = cloudai(capsys, "submit", "w1", "--cmd", "echo hi", "--cpu", "1", *url)
    assert code == 0, err
    task_id = re.search(r"task (task-\w+) submitted to w1", out).group(1)
    wait_until(lambda: api.task(task_id).status == "success", 15, "task success")
    code, out, _ = cloudai(capsys, "tasks", *url)
    assert re.search(rf"{task_id}\s*│\s*w1\s*│\s*\$ echo hi\s*│\s*success", out), out
    code, out, err = cloudai(capsys, "logs", task_id, *url)
    assert code == 0 and out.startswith("hi\n"), out  # the output, then the worker's footer
    assert f"task {task_id}: success, exit code 0" in err

    code, out, _ = cloudai(capsys, "submit", "w1", "--cmd", "sleep 60", "--id", "long-1", *url)
    assert code == 0 and "task long-1 submitted" in out
    wait_until(lambda: api.task("long-1").status == "running", 15, "long-1 running")
    code, out, _ = cloudai(capsys, "tasks", "--status", "running", "--json", *url)
    assert [t["task_id"] for t in json.loads(out)] == ["long-1"]
    code, out, _ = cloudai(capsys, "tasks", "--status", "running", "--plain", *url)
    header, row = out.splitlines()
    assert header.startswith("task_id\tworker_id\tstatus\t")
    assert row.startswith("long-1\tw1\trunning\t-\t")
    code, out, _ = cloudai(capsys, "workers", "--plain", *url)
    assert out.splitlines()[1].startswith(f"w1\t{address}\tactive\t")
    code, out, _ = cloudai(capsys, "cancel", "long-1", *url)
    assert code == 0 and "task long-1: cancelling" in out
    wait_until(lambda: api.task("long-1").status == "cancelled", 15, "long-1 cancelled")
    code, out, _ = cloudai(capsys, "cancel", "long-1", *url)
    assert code == 1 and out == ""
    code, _, err = cloudai(capsys, "tasks", "--worker", "w1", "--status", "cancelled", *url)
    assert code == 0

    # The same id twice: the API's message, one line, exit 1.
    code, out, err = cloudai(capsys, "submit", "w1", "--cmd", "x", "--id", "long-1", *url)
    assert (code, out) == (1, "")
    assert err == "error: task id 'long-1' already exists\n"

    code, out, _ = cloudai(capsys, "unregister", "w1", *url)
    assert code == 0 and "worker w1 unregistered" in out
    code, out, err = cloudai(capsys, "unregister", "w1", *url)
    assert (code, out, err) == (1, "", "error: unknown worker 'w1'\n")
    code, out, err = cloudai(capsys, "workers", "nobody", *url)
    assert (code, err) == (1, "error: unknown worker 'nobody'\n")
    code, out, err = cloudai(capsys, "logs", "nope", *url)
    assert (code, err) == (1, "error: unknown task 'nope'\n")
    code, out, err = cloudai(capsys, "register", "bad/id", "1.2.3.4:5", *url)
    assert code == 1 and err.startswith("error: worker_id 'bad/id' has invalid characters")
    code, out, err = cloudai(capsys, "submit", "w1", *url)
    assert code == 2 and "--image" in err


def test_token_is_required_when_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    master = start_master(tmp_path, CLOUDAI_ADMIN_TOKEN=TOKEN)
    try:
        url = ("--url", master.extra["http"])
        code, out, err = cloudai(capsys, "register", "w1", "127.0.0.1:9", *url)
        assert (code, out) == (1, "")
        assert err == (
            "error: this call needs the admin token: Authorization: Bearer $CLOUDAI_ADMIN_TOKEN\n"
        )
        code, _, err = cloudai(capsys, "register", "w1", "127.0.0.1:9", "--token", "wrong", *url)
        assert code == 1 and "admin token" in err
        # Reads stay open.
        code, out, _ = cloudai(capsys, "workers", *url)
        assert code == 0 and "no workers registered" in out
        code, out, err = cloudai(capsys, "register", "w1", "127.0.0.1:9", "--token", TOKEN, *url)
        assert code == 0, err
        monkeypatch.setenv("CLOUDAI_ADMIN_TOKEN", TOKEN)
        monkeypatch.setenv("CLOUDAI_URL", master.extra["http"])
        code, out, err = cloudai(capsys, "unregister", "w1")
        assert code == 0 and "worker w1 unregistered" in out, err
    finally:
        master.kill()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_installed_command_and_an_unreachable_master(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        cloudai_command("status", "--url", url),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot reach the master at {url}: connection refused (is it running? see --url)\n"
    )


def test_top_once_prints_one_frame(
    master: Process, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = start_worker(tmp_path, "w7", *FAST)
    try:
        ApiClient(master.extra["http"]).register("w7", worker.extra["address"])
        wait_heartbeat(master.extra["http"], "w7")
        result = subprocess.run(
            cloudai_command("top", "--once", "--url", master.extra["http"]),
            capture_output=True,
            text=True,
            env=child_env(COLUMNS="120"),
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        row = re.search(rf"w7\s+active\s+\S+\s+{PERCENT}", result.stdout)
        assert row, result.stdout
        plausible_percent(row[1])
    finally:
        worker.kill()
