"""Unit tests open no network sockets: a test that needs one belongs in tests/integration.

Two guards, active during each unit test's set-up and body (not its tear-down, which
may close what the test opened):

- Python's ``socket.socket`` refuses any family but AF_UNIX, at the call that creates the
  socket (so the failure shows where). AF_UNIX stays allowed: asyncio's self-pipe is a
  ``socket.socketpair()``; pipes to subprocesses are no sockets at all.
- Sockets that C code opens do not pass through Python's ``socket`` module. The calls
  that open them refuse too: gRPC servers and channels (``grpc.server``,
  ``grpc.aio.server``, ``grpc[.aio].insecure_channel``/``secure_channel``) and PostgreSQL
  connections (``psycopg.connect``, which SQLAlchemy uses). For anything else (uvloop,
  another C library): after the test body, any TCP or UDP socket that this process holds
  and did not hold before the test's set-up fails the test, naming its addresses (Linux:
  read from /proc; elsewhere this last guard is off).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psycopg
import pytest

_ADVICE = "unit tests open no network sockets; move this test to tests/integration"
_PROC_NET = ("tcp", "tcp6", "udp", "udp6")
_BEFORE = pytest.StashKey[frozenset[str]]()
_PATCH = pytest.StashKey[pytest.MonkeyPatch]()


class NetworkInUnitTest(AssertionError):
    """A unit test created a network socket."""


def _guarded_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    _socket_init(self, *args, **kwargs)
    if self.family != socket.AF_UNIX:
        family = getattr(self.family, "name", self.family)
        self.close()
        raise NetworkInUnitTest(f"a socket of family {family} was created: {_ADVICE}")


_socket_init = socket.socket.__init__


def _refusing(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkInUnitTest(f"{what} was called: {_ADVICE}")

    return refuse


def _refuse_network(patch: pytest.MonkeyPatch) -> None:
    patch.setattr(socket.socket, "__init__", _guarded_init)
    for module, names in (
        (grpc, ("server", "insecure_channel", "secure_channel")),
        (grpc.aio, ("server", "insecure_channel", "secure_channel")),
    ):
        for name in names:
            patch.setattr(module, name, _refusing(f"{module.__name__}.{name}"))
    patch.setattr(psycopg, "connect", _refusing("psycopg.connect"))
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        patch.setattr(cls, "connect", _refusing(f"psycopg.{cls.__name__}.connect"))


def _own_sockets() -> frozenset[str]:
    """Inodes of the sockets this process holds ('' where /proc is not there)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return frozenset()
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile, or the listing's own descriptor
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return frozenset(inodes)


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"


def _network_sockets(inodes: frozenset[str]) -> list[str]:
    """The TCP/UDP sockets among ``inodes``, as 'tcp 127.0.0.1:5000 -> 0.0.0.0:0'."""
    found = []
    for name in _PROC_NET:
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                found.append(f"{name} {_address(fields[1])} -> {_address(fields[2])}")
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    item.stash[_BEFORE] = _own_sockets()
    patch = pytest.MonkeyPatch()
    _refuse_network(patch)
    item.stash[_PATCH] = patch
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    result = yield
    new = _own_sockets() - item.stash.get(_BEFORE, frozenset())
    opened = _network_sockets(new) if new else []
    if opened:
        raise NetworkInUnitTest(
            f"the test holds network sockets opened outside Python's socket module"
            f" (gRPC, libpq, uvloop): {'; '.join(opened)}: {_ADVICE}"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    # Off before tear-down: the last test's tear-down also finalises the session's
    # fixtures, e.g. the integration tests' PostgreSQL database.
    patch = item.stash.get(_PATCH, None)
    if patch is not None:
        patch.undo()
    return (yield)
