from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudai.worker import cli
from cloudai.worker.settings import WorkerSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


def test_defaults_match_the_existing_worker() -> None:
    settings = cli.settings_from_args(parse())
    default = WorkerSettings()
    assert settings.worker_id == default.worker_id  # the hostname
    assert (settings.port, settings.listen_host, settings.heartbeat_interval) == (
        50052,
        "0.0.0.0",
        5.0,
    )
    assert not settings.insecure and settings.join_token is None  # secure by default
    assert settings.master_address is None  # flow (1): wait for MasterRegister
    assert settings.docker_enabled


def test_flags_fill_the_settings(tmp_path: Path) -> None:
    args = parse(
        "--id", "node-7", "--port", ":6000", "--host", "127.0.0.1", "--master", "10.0.0.1:50051",
        "--interval", "0.5", "--work-dir", str(tmp_path), "--drain-timeout", "3",
        "--kill-grace", "1", "--advertise-host", "10.0.0.7", "--no-docker",
    )  # fmt: skip
    s = cli.settings_from_args(args)
    assert (s.worker_id, s.port, s.host, s.master_address) == (
        "node-7",
        6000,
        "127.0.0.1",
        "10.0.0.1:50051",
    )
    assert (s.heartbeat_interval, s.work_dir, s.drain_timeout, s.kill_grace) == (
        0.5,
        tmp_path,
        3.0,
        1.0,
    )
    assert (s.advertise_host, s.docker_enabled) == ("10.0.0.7", False)
    assert s.resolved_work_dir() == tmp_path


@pytest.mark.parametrize(
    "argv",
    [["--port", "x"], ["--port", "70000"], ["--master", "nohost"], ["--id", "bad id"],
     ["--drain-timeout", "-1"]],
)  # fmt: skip
def test_invalid_flags_are_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_invalid_interval_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="interval"):
        cli.settings_from_args(parse("--interval", "0"))


def test_default_work_dir_is_per_worker() -> None:
    assert WorkerSettings(worker_id="a").resolved_work_dir().name == "a"
    assert (
        WorkerSettings(worker_id="a").resolved_work_dir()
        != WorkerSettings(worker_id="b").resolved_work_dir()
    )


def test_cloudai_worker_prints_its_registration_line_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudai", "worker", "--insecure", "--id", "cli-1", "--port",
         "0", "--work-dir", str(tmp_path / "w"), "--no-docker", "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the worker did not become ready"
            time.sleep(0.05)
        data = json.loads(ready.read_text())
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert data["worker_id"] == "cli-1" and data["address"] == f"127.0.0.1:{data['port']}"
    assert "Worker ID: cli-1" in output
    assert f"Worker address: 127.0.0.1:{data['port']}" in output
    assert f"register cli-1 127.0.0.1:{data['port']}" in output


def test_a_plaintext_worker_listens_on_loopback_unless_told() -> None:
    assert cli.settings_from_args(parse("--insecure")).listen_host == "127.0.0.1"
    assert cli.settings_from_args(parse("--insecure", "--host", "0.0.0.0")).listen_host == (
        "0.0.0.0"
    )


def test_a_secure_worker_that_never_joined_says_how(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cloudai", "worker", "--id", "cli-2", "--port", "0",
         "--work-dir", str(tmp_path / "w"), "--no-docker"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "has not joined a cluster yet: start it with --master HOST:PORT --join TOKEN" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_task_limits_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.settings_from_args(parse()).task_limits == "auto"
    assert cli.settings_from_args(parse("--task-limits", "accounted")).task_limits == "accounted"
    monkeypatch.setenv("CLOUDAI_TASK_LIMITS", "accounted")
    assert cli.settings_from_args(parse()).task_limits == "accounted"
    assert cli.settings_from_args(parse("--task-limits", "auto")).task_limits == "auto"
    with pytest.raises(SystemExit):
        parse("--task-limits", "enforced")
