"""Fixtures of the tests that run gateways and the bus (NATS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bus_harness import NatsServer, bus_prefix, reachable_nats, start_auth_nats


@pytest.fixture
def nats_url() -> str:
    """The NATS server every test may share (127.0.0.1:4222)."""
    return reachable_nats()


@pytest.fixture
def prefix() -> str:
    """Subjects of this test only (other runs may share the NATS server)."""
    return bus_prefix()


@pytest.fixture
def auth_bus(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test with the users of docs/SCALING.md (an NKey each:
    master, gateway: the gateway with --id g1)."""
    server = start_auth_nats(tmp_path / "nats")
    yield server
    server.close()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Processes a test started, closed in reverse order at its end."""
    started: list[Any] = []
    yield started
    for process in reversed(started):
        process.close()
