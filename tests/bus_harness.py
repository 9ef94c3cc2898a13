"""Helpers for tests with gateways and the real NATS server (tests/integration)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from tests.harness import Process, start_process

NATS = os.environ.get("CLOUDAI_TEST_NATS", "nats://127.0.0.1:4222")


def reachable_nats() -> str:
    """The NATS server's URL; the test is skipped when it is unreachable (failed when CI
    is set: .ci/run starts it)."""
    host, _, port = NATS.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=2).close()
    except OSError as exc:
        message = f"NATS is not reachable at {NATS}: {exc}"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{message} (CI is set: the server must be up)", pytrace=False)
        pytest.skip(message)
    return NATS


def bus_prefix() -> str:
    """Subjects of this test only (other runs may share the NATS server)."""
    return f"t{uuid.uuid4().hex[:12]}"


def start_gateway(
    workdir: Path, name: str, bus: str, prefix: str, grpc_port: int = 0, ws: bool = True
) -> Process:
    args = ["gateway", "--insecure", "--id", name, "--bus", bus, "--host", "127.0.0.1"]
    args += ["--grpc-port", str(grpc_port)]
    if ws:
        args += ["--ws-port", "0"]
    gateway = start_process(args, workdir, name, CLOUDAI_BUS_PREFIX=prefix)
    gateway.extra["grpc"] = f"127.0.0.1:{gateway.ready['grpc_port']}"
    if gateway.ready.get("http_port"):
        gateway.extra["ws"] = f"ws://127.0.0.1:{gateway.ready['http_port']}"
    return gateway
