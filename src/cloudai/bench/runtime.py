"""Event loop and coordinator-pipe helpers shared by the benchmark's child processes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (cheaper per callback), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def receive(pipe: Connection) -> Any:
    """The next message from the coordinator, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(pipe.fileno())
        if future.done():
            return
        try:
            future.set_result(pipe.recv())
        except (EOFError, OSError) as exc:
            future.set_exception(exc)

    loop.add_reader(pipe.fileno(), readable)
    try:
        return await future
    finally:
        loop.remove_reader(pipe.fileno())
