"""The master's interactive console, driven through a real pty as an operator would.

The worker is a real ``cloudai worker`` process on loopback: it waits for the master's
MasterRegister, then heartbeats with the machine's figures and runs tasks as processes.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cloudai.cli.api_client import ApiClient
from tests.harness import (
    PERCENT,
    Process,
    child_env,
    cloudai_command,
    plausible_percent,
    start_worker,
    wait_heartbeat,
    wait_until,
)
from tests.pty_terminal import PtyTerminal

PROMPT = r"cloudai> "


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Process]:
    process = start_worker(tmp_path, "w1", "--interval", "0.3")  # waits for MasterRegister
    yield process
    process.kill()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[PtyTerminal, ApiClient]]:
    ready = tmp_path / "master.ready.json"
    term = PtyTerminal(
        cloudai_command(
            "master",
            "--insecure",  # the admin-first flow of the plaintext protocol (Go workers)
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(tmp_path / "data"),
            "--ready-file",
            str(ready),
        ),
        env=child_env(),
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: ready.exists() or term.proc.poll() is not None, 20, "master ready")
        assert ready.exists(), term.text()
        api = ApiClient(f"http://127.0.0.1:{json.loads(ready.read_text())['http_port']}")
        term.expect(PROMPT)
        yield term, api
    finally:
        term.close()


def run(term: PtyTerminal, line: str, expect: str, timeout: float = 15.0) -> re.Match[str]:
    """Type a line, wait for ``expect`` in what follows; returns the match."""
    mark = term.line(line)
    return term.expect(expect, since=mark, timeout=timeout)


def test_console_session(
    console: tuple[PtyTerminal, ApiClient], worker: Process, tmp_path: Path
) -> None:
    term, api = console
    assert "Type 'help'" in term.text()
    address = worker.extra["address"]

    # register: persists, calls the worker's MasterRegister; the worker then registers.
    run(term, f"register w1 {address}", rf"worker w1 registered at {re.escape(address)}")
    wait_heartbeat(api.url, "w1")
    row = run(
        term,
        "workers",
        rf"w1\s*│\s*{re.escape(address)}\s*│\s*active\s*│\s*{PERCENT}[^│]*│\s*{PERCENT}",
    )
    plausible_percent(row[1])  # CPU: the machine's, it varies
    assert plausible_percent(row[2]) > 0  # memory: a real heartbeat, not registration zeros
    stats = run(term, "stats w1", rf"CPU\s+{PERCENT} of (\d+) cores")
    plausible_percent(stats[1])
    assert int(stats[2]) == psutil.cpu_count()
    run(term, "status", r"Workers\s+1 active / 1 registered")

    # A task that finishes: see it in `tasks`, read its logs.
    submitted = run(
        term, 'task w1 --cmd "echo hello" -cpu_cores 1 -mem 0.5', r"task (task-\w+) submitted to w1"
    )
    task_id = submitted[1]
    wait_until(lambda: api.task(task_id).status == "success", 15, "task success")
    run(term, "tasks", rf"{task_id}\s*│\s*w1\s*│\s*\$ echo hello\s*│\s*success")
    run(term, f"logs {task_id}", rf"task {task_id}: success, exit code 0\s*\n\s*hello\s*\n")

    # A long task: cancel it.
    run(term, "task w1 --cmd 'sleep 100' --id long-1", r"task long-1 submitted to w1")
    wait_until(lambda: api.task("long-1").status == "running", 15, "long-1 running")
    run(term, "tasks running", r"long-1\s*│\s*w1")
    run(term, "cancel long-1", r"task long-1: cancelling")
    wait_until(lambda: api.task("long-1").status == "cancelled", 15, "long-1 cancelled")
    run(term, "tasks cancelled", r"long-1\s*│\s*w1\s*│[^\n]*cancelled")

    # help, and bad input: one line each, with the usage, never a traceback.
    run(term, "help", r"unregister <worker_id>")
    run(term, "frobnicate", r"error: unknown command 'frobnicate'; type 'help'")
    run(term, "stats", r"error: stats takes 1 argument, got 0 \(usage: stats <worker_id>\)")
    run(term, "stats nobody", r"error: unknown worker 'nobody'")
    run(term, "task w1 ubuntu -mem lots", r"error: -mem expects a number, got 'lots'")
    run(term, "register bad/id 1.2.3.4:5", r"error: worker_id 'bad/id' has invalid characters")
    run(term, "register w2 nowhere", r"error: address 'nowhere' is not HOST:PORT")

    # status -w refreshes until a key is pressed, then the prompt is back.
    mark = term.line("status -w")
    term.expect(r"press any key to stop", since=mark)
    mark = term.mark()
    term.write("x")
    term.expect(PROMPT, since=mark)

    # Ctrl-C clears the line being typed; the master keeps running.
    mark = term.mark()
    term.type("unregister w1")
    term.write("\x03")
    term.expect(PROMPT, since=mark)
    run(term, "status", r"Workers\s+1 active / 1 registered")

    # Tab completion of a command name and a worker id.
    mark = term.mark()
    term.type("unreg\t")
    term.expect(r"unregister", since=mark)
    term.type(" w\t")
    term.expect(r"w1", since=mark)
    term.write("\r")
    term.expect(r"worker w1 unregistered", since=mark)

    mark = term.line("exit")
    term.expect(r"stopping the master", since=mark)
    assert term.wait() == 0
    assert "Traceback" not in term.text()
    history = (tmp_path / "data" / "console_history").read_text()
    assert "register w1" in history and "workers" in history


def test_ctrl_d_stops_the_master(console: tuple[PtyTerminal, ApiClient]) -> None:
    term, _ = console
    mark = term.mark()
    term.write("\x04")  # Ctrl-D on an empty line
    term.expect(r"stopping the master", since=mark)
    assert term.wait() == 0


def test_ctrl_c_on_an_empty_line_stops_the_master(
    console: tuple[PtyTerminal, ApiClient],
) -> None:
    term, _ = console
    mark = term.mark()
    term.write("\x03")
    term.expect(r"stopping the master", since=mark)
    assert term.wait() == 0


def test_cloudai_up_starts_a_secured_cluster_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """What `make run` runs: a secured cluster with nothing to type. The workers join
    with tokens made for them, and the client commands on the same machine find the
    master's CA and admin token by themselves (only the URL is given here, since the test
    uses ephemeral ports). Ctrl-C on the empty prompt stops the workers, then the master."""
    env = child_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    term = PtyTerminal(
        cloudai_command(
            "up", "--workers", "2", "--grpc-port", "0", "--http-port", "0", "--interval", "0.5"
        ),
        env=env,
        cwd=tmp_path,
    )
    try:
        banner = term.expect(r"HTTPS? 127\.0\.0\.1:(\d+), workers: local-1, local-2", timeout=30)
        term.expect(r"stop:\s+Ctrl-C on an empty prompt")
        term.expect(PROMPT)
        client_env = {**env, "CLOUDAI_URL": f"https://127.0.0.1:{banner[1]}"}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                cloudai_command(*args),
                env=client_env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )

        def active() -> bool:
            done = cli("workers", "--json")
            return (
                done.returncode == 0 and sum(w["is_active"] for w in json.loads(done.stdout)) == 2
            )

        wait_until(active, 60, "2 active workers")
        submitted = cli("submit", "local-1", "--cmd", "echo secured-hello", "--id", "t-up")
        assert submitted.returncode == 0, submitted.stderr
        wait_until(lambda: "secured-hello" in cli("logs", "t-up").stdout, 30, "the task's logs")
        top = cli("top", "--once")
        assert top.returncode == 0 and "local-1" in top.stdout and "local-2" in top.stdout, top
        watch = cli("watch", "--count", "1")
        assert watch.returncode == 0 and "local-" in watch.stdout, watch
        mark = term.mark()
        term.write("\x03")
        term.expect(r"stopping the master", since=mark)
        assert term.wait(30) == 0
        assert "Traceback" not in term.text()
    finally:
        term.close()
        # A master killed by close() leaves its workers (own sessions) behind: end them.
        for proc in psutil.process_iter(["cmdline"]):
            if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
