"""Interactive admin console on the master's terminal (filled in by the admin CLI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudai.master.server import MasterServer


def make_console(server: MasterServer) -> Callable[[], Awaitable[object]] | None:
    return None
