"""Joining a real secure master with join tokens made by the ``cloudai token`` COMMANDS.

A worker joins with a token from ``cloudai token create``; an expired, a revoked and a
used-up token are refused (the worker exits 1 with one line that says which, never a
traceback); a worker restarted after joining needs no token (it keeps its certificate);
after ``cloudai unregister`` its certificate is refused until it joins again with a new
token.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from cloudai.api.models import Worker
from cloudai.cli.api_client import ApiClient, ApiError
from tests.harness import (
    Process,
    admin_client,
    child_env,
    cloudai_command,
    start_master,
    start_process,
    wait_until,
)

INTERVAL = ["--interval", "0.2"]


@dataclass
class Master:
    process: Process
    tmp: Path
    api: ApiClient

    @property
    def connection(self) -> list[str]:
        extra = self.process.extra
        return ["--url", extra["http"], "--token", extra["admin_token"], "--ca", extra["ca_file"]]

    @property
    def grpc(self) -> str:
        return str(self.process.extra["grpc"])


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    tmp = tmp_path_factory.mktemp("join")
    process = start_master(tmp, secure=True)
    try:
        yield Master(process, tmp, admin_client(process))
    finally:
        process.close()


def cli(master: Master, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``cloudai`` client command against ``master``; it must succeed."""
    done = subprocess.run(
        cloudai_command(*args, *master.connection),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=30,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def create_token(master: Master, *options: str) -> tuple[str, str]:
    """``cloudai token create OPTIONS``: (the token, its id)."""
    done = cli(master, "token", "create", *options)
    token = done.stdout.strip()
    assert token.startswith("cloudai-join.1.") and "\n" not in token, done.stdout
    found = re.search(r"join token (\S+) created", done.stderr)
    assert found, done.stderr
    assert f"--join {token}" in done.stderr  # the line to run on the worker
    return token, found.group(1)


def token_state(master: Master, token_id: str) -> str:
    listing: list[dict[str, Any]] = orjson.loads(cli(master, "token", "list", "--json").stdout)
    return str(next(t for t in listing if t["token_id"] == token_id)["state"])


def worker_args(master: Master, worker_id: str) -> list[str]:
    return [
        "worker",
        "--id",
        worker_id,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--work-dir",
        str(work_dir(master, worker_id)),
        "--no-docker",
        "--master",
        master.grpc,
        *INTERVAL,
    ]


def work_dir(master: Master, worker_id: str) -> Path:
    return master.tmp / f"work-{worker_id}"


def start_secure_worker(master: Master, worker_id: str, token: str | None) -> Process:
    """A real secure worker: it joins with ``token``, or (None) starts with the
    certificate it kept. Never ``--insecure``."""
    args, name = worker_args(master, worker_id), f"worker-{worker_id}"
    if token is None:
        worker = start_process(args, master.tmp, name)
    else:
        worker = start_process(args, master.tmp, name, CLOUDAI_JOIN_TOKEN=token)
    worker.extra["address"] = worker.ready["address"]
    return worker


def refused_join(master: Master, worker_id: str, token: str) -> str:
    """Run a worker that must fail to join: it exits 1; its one-line message."""
    done = subprocess.run(
        cloudai_command(*worker_args(master, worker_id)),
        capture_output=True,
        text=True,
        env=child_env(CLOUDAI_JOIN_TOKEN=token),
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    messages = [line for line in output.splitlines() if line.startswith("cloudai worker:")]
    assert len(messages) == 1, output
    assert messages[0] == done.stderr.rstrip("\n").splitlines()[-1]  # the last word
    assert not (work_dir(master, worker_id) / "tls" / "worker.pem").exists()
    return messages[0]


def active_after(master: Master, worker_id: str, after: float, timeout: float = 20) -> Worker:
    """Wait until the master shows a heartbeat of ``worker_id`` newer than ``after``."""

    def fresh() -> Worker | None:
        try:
            view = master.api.worker(worker_id)
        except ApiError:
            return None
        ok = view.is_active and view.last_update is not None and view.last_update > after
        return view if ok and view.memory_usage > 0 else None

    result: Worker = wait_until(fresh, timeout, f"a heartbeat from {worker_id}")
    return result


def unknown_to_master(master: Master, worker_id: str) -> bool:
    try:
        master.api.worker(worker_id)
    except ApiError as exc:
        return exc.status == 404
    return False


# -- tests ----------------------------------------------------------------------------------


def test_a_worker_joins_with_a_token_from_the_cli(master: Master) -> None:
    token, token_id = create_token(master, "--uses", "1", "--description", "cli")
    worker = start_secure_worker(master, "j1", token)
    try:
        view = active_after(master, "j1", 0.0)
        assert view.address == worker.extra["address"]
        tls = work_dir(master, "j1") / "tls"
        assert (tls / "worker.key").stat().st_mode & 0o777 == 0o600
        assert (tls / "ca.pem").read_bytes() == Path(master.process.extra["ca_file"]).read_bytes()
        assert token_state(master, token_id) == "used up"
    finally:
        worker.close()


def test_an_expired_token_is_refused(master: Master) -> None:
    token, token_id = create_token(master, "--ttl", "1")
    wait_until(lambda: token_state(master, token_id) == "expired", 15, "the token to expire")
    message = refused_join(master, "x-expired", token)
    assert "expired" in message, message
    assert token_id in message


def test_a_revoked_token_is_refused(master: Master) -> None:
    token, token_id = create_token(master)
    cli(master, "token", "revoke", token_id)
    assert token_state(master, token_id) == "revoked"
    message = refused_join(master, "x-revoked", token)
    assert "revoked" in message, message
    assert token_id in message


def test_a_one_use_token_admits_one_worker(master: Master) -> None:
    token, token_id = create_token(master, "--uses", "1")
    first = start_secure_worker(master, "u1", token)
    try:
        active_after(master, "u1", 0.0)
        message = refused_join(master, "u2", token)
        assert "used 1 of 1" in message, message
        assert unknown_to_master(master, "u2")
        assert token_state(master, token_id) == "used up"
        active_after(master, "u1", time.time())  # the first one is unaffected
    finally:
        first.close()


def test_a_restarted_worker_rejoins_without_a_token_until_unregistered(master: Master) -> None:
    token, _ = create_token(master, "--uses", "1", "--worker-id", "r1")
    worker = start_secure_worker(master, "r1", token)
    cert_file = work_dir(master, "r1") / "tls" / "worker.pem"
    try:
        active_after(master, "r1", 0.0)
        certificate = cert_file.read_bytes()
        assert worker.stop() == 0

        # Restarted without any token: it comes back with the certificate it kept.
        restarted_at = time.time()
        worker = start_secure_worker(master, "r1", None)
        active_after(master, "r1", restarted_at)
        assert cert_file.read_bytes() == certificate
        assert master.process.log().count("worker r1 joined") == 1

        # Unregistered: its certificate is refused at once, and it cannot register again.
        done = cli(master, "unregister", "r1")
        assert "r1" in done.stdout + done.stderr
        wait_until(lambda: "PERMISSION_DENIED" in worker.log(), 15, "r1's calls to be refused")
        assert unknown_to_master(master, "r1")
        assert worker.stop() == 0

        log_before = len(worker.log())  # the restarted worker appends to the same log
        worker = start_secure_worker(master, "r1", None)
        wait_until(
            lambda: "PERMISSION_DENIED" in worker.log()[log_before:],
            15,
            "the restarted r1's registration to be refused",
        )
        assert unknown_to_master(master, "r1")
        assert worker.stop() == 0

        # Joining again with a new token (after deleting the old certificate) works.
        shutil.rmtree(work_dir(master, "r1") / "tls")
        new_token, _ = create_token(master, "--uses", "1", "--worker-id", "r1")
        rejoined_at = time.time()
        worker = start_secure_worker(master, "r1", new_token)
        active_after(master, "r1", rejoined_at)
        assert cert_file.read_bytes() != certificate
    finally:
        worker.close()
    assert "Traceback" not in master.process.log()
