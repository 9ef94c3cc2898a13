"""The bus as the gateway and the master see it: publish, subscribe, request/reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class BusUnavailable(ConnectionError):
    """The bus, or the one who answers a request, cannot be reached now."""


class Delivery(Protocol):
    """A message handed to a subscriber (NATS's ``Msg`` has these attributes)."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def reply(self) -> str: ...


Handler = Callable[[Delivery], Awaitable[None]]


class Bus(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Connect; BusUnavailable (one line) when the bus cannot be reached."""
        ...

    async def publish(self, subject: str, data: bytes) -> None:
        """Fire and forget (buffered while reconnecting)."""
        ...

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """One answer, or BusUnavailable (no responder, timeout, disconnected)."""
        ...

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> None:
        """``handler`` is awaited for each message, in order, one at a time."""
        ...

    async def close(self) -> None:
        """Flush what is buffered, then disconnect."""
        ...
