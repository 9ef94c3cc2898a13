"""The unit tier's guard (tests/unit/conftest.py): network sockets fail, AF_UNIX does not."""

from __future__ import annotations

import asyncio
import socket

import grpc
import grpc.aio
import psycopg
import pytest

REFUSED = "unit tests open no network sockets"


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_network_sockets_are_refused(family: socket.AddressFamily) -> None:
    with pytest.raises(AssertionError, match=REFUSED):
        socket.socket(family, socket.SOCK_STREAM)
    with pytest.raises(AssertionError, match=REFUSED):
        socket.create_connection(("127.0.0.1", 9))


def test_c_level_entry_points_are_refused() -> None:
    with pytest.raises(AssertionError, match=REFUSED):
        grpc.aio.server()
    with pytest.raises(AssertionError, match=REFUSED):
        grpc.insecure_channel("127.0.0.1:9")
    with pytest.raises(AssertionError, match=REFUSED):
        psycopg.connect("postgresql://postgres@127.0.0.1:9/none")


async def test_unix_sockets_and_the_event_loop_are_allowed() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"
    await asyncio.sleep(0)
