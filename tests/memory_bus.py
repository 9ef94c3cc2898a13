"""The Bus protocol in memory, for unit tests of the gateway and the master's bus side
(no sockets): publish delivers to matching subscribers at once, request/reply through an
inbox subject."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from cloudai.bus.base import BusUnavailable, Handler


@dataclass(frozen=True)
class Msg:
    subject: str
    data: bytes
    reply: str = ""


def matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


@dataclass
class MemoryBus:
    """The Bus protocol in memory: publish delivers to matching subscribers at once."""

    subscriptions: list[tuple[str, Handler]] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    replies: dict[str, asyncio.Future[bytes]] = field(default_factory=dict)
    inbox: itertools.count[int] = field(default_factory=itertools.count)
    connected: bool = True

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        self.connected = False

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> None:
        self.subscriptions.append((subject, handler))

    async def publish(self, subject: str, data: bytes, reply: str = "") -> None:
        if not self.connected:
            raise BusUnavailable("closed")
        self.published.append((subject, data))
        waiter = self.replies.pop(subject, None)
        if waiter is not None:
            waiter.set_result(data)
            return
        for pattern, handler in list(self.subscriptions):
            if matches(pattern, subject):
                await handler(Msg(subject, data, reply))

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        if not any(matches(p, subject) for p, _ in self.subscriptions):
            raise BusUnavailable("nobody answers on the bus")
        inbox = f"_INBOX.{next(self.inbox)}"
        waiter = self.replies[inbox] = asyncio.get_running_loop().create_future()
        await self.publish(subject, data, reply=inbox)
        return await asyncio.wait_for(waiter, timeout)
