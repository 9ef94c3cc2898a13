"""Helpers for tests that start real master/worker processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


async def async_wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def cloudai_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cloudai", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRPC_PORT", None)
    env.pop("HTTP_PORT", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"process did not exit after {sig}:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self, timeout: float = 5.0) -> None:
        """End the process after a test: SIGTERM, then SIGKILL after ``timeout`` s.

        Unlike ``kill()`` it lets the process exit cleanly, which is also when it writes
        its coverage data (``make test``): a killed process counts for nothing.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_process(
    args: list[str], workdir: Path, name: str, timeout: float = 20.0, **env: str
) -> Process:
    """Start ``cloudai <args> --ready-file F`` and wait for its ready file."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready_file = workdir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cloudai_command(*args, "--ready-file", str(ready_file)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(**env),
            cwd=workdir,
        )
    process = Process(proc, {}, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{process.log()}")
        return ready_file.exists()

    try:
        wait_until(ready, timeout, f"{name} to be ready")
    except AssertionError:
        process.kill()
        raise
    process.ready = json.loads(ready_file.read_text())
    return process


def start_master(
    workdir: Path, *args: str, name: str = "master", secure: bool = False, **env: str
) -> Process:
    """A real master on ephemeral loopback ports. ``secure``: mutual TLS, HTTPS and
    tokens, as by default (``extra``: ``ca_file``, ``admin_token``); otherwise
    ``--insecure``, the plaintext protocol that most protocol tests speak."""
    mode = [] if secure else ["--insecure"]
    master = start_process(
        [
            "master",
            *mode,
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--host",
            "127.0.0.1",
            "--no-cli",
            "--data-dir",
            str(workdir / "data"),
            *args,
        ],
        workdir,
        name,
        **env,
    )
    scheme = "https" if secure else "http"
    master.extra["grpc"] = f"127.0.0.1:{master.ready['grpc_port']}"
    master.extra["http"] = f"{scheme}://127.0.0.1:{master.ready['http_port']}"
    master.extra["ws"] = f"{'wss' if secure else 'ws'}://127.0.0.1:{master.ready['http_port']}"
    if secure:
        master.extra["ca_file"] = str(workdir / "data" / "tls" / "ca.pem")
        master.extra["admin_token"] = (workdir / "data" / "admin.token").read_text().strip()
    return master


def admin_client(master: Process, token: str | None = None) -> Any:
    """An ApiClient for ``master`` with its admin token (secure) or none (insecure)."""
    from cloudai.cli.api_client import ApiClient

    ca_file = master.extra.get("ca_file")
    return ApiClient(
        master.extra["http"],
        token if token is not None else master.extra.get("admin_token"),
        ca_file=Path(ca_file) if ca_file else None,
    )


def worker_args(workdir: Path, worker_id: str, *extra: str) -> list[str]:
    """``worker`` arguments of a test worker: loopback, any free port, its own work dir
    under ``workdir``, no Docker; then ``extra``."""
    return [
        "worker",
        "--id",
        worker_id,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--work-dir",
        str(workdir / f"work-{worker_id}"),
        "--no-docker",
        *extra,
    ]


def start_worker(
    workdir: Path,
    worker_id: str,
    *args: str,
    master: str | None = None,
    join: str | None = None,
    **env: str,
) -> Process:
    """A real worker on an ephemeral loopback port (``--master``: it registers itself).
    ``join``: a join token (secure mode); without one the worker speaks plaintext."""
    extra = ["--master", master] if master else []
    if join is None:
        extra.append("--insecure")
    else:
        env = {**env, "CLOUDAI_JOIN_TOKEN": join}
    worker = start_process(
        worker_args(workdir, worker_id, *extra, *args),
        workdir,
        f"worker-{worker_id}",
        **env,
    )
    worker.extra["address"] = worker.ready["address"]
    return worker


PERCENT = r"(\d{1,3}\.\d)%"
"""A usage figure as the CLI shows it (``42.0%``); the value is group 1."""


def plausible_percent(text: str) -> float:
    value = float(text.rstrip("%"))
    assert 0.0 <= value <= 100.0, f"{text} is not a percentage"
    return value


def wait_heartbeat(http_url: str, worker_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the master shows ``worker_id`` active with a real heartbeat; its view.

    memory_usage > 0: registration alone reports zeros, a heartbeat the machine's figures.
    """
    from cloudai.cli.api_client import ApiClient, ApiError

    api = ApiClient(http_url)

    def seen() -> dict[str, Any] | None:
        try:
            view = api.worker(worker_id).model_dump(mode="json")
        except ApiError:  # not registered yet
            return None
        return view if view.get("is_active") and (view.get("memory_usage") or 0) > 0 else None

    return wait_until(seen, timeout, f"a heartbeat from {worker_id}")
