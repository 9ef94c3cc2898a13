"""The event loop every CloudAI process runs on: uvloop where it is installed (a
dependency on Linux), asyncio's own elsewhere. Passed to ``asyncio.Runner``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
