"""The bench's dashboard client (picows) against a reference server: aiohttp's WebSocket.

Handshake, messages of every length class, pings both ways, the close handshake both
ways and a refused upgrade, on loopback with one in-process server per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from picows import WSHandshakeError

from cloudai.bench import wsclient
from tests.harness import async_wait_until

Handler = Callable[[web.WebSocketResponse], Awaitable[None]]


class Server:
    """An aiohttp app with ``/ws`` running ``handler`` per connection (no autoping, so
    the test sees every PING and PONG)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[aiohttp.WSMessage] = []
        self.done = asyncio.Event()
        self.port = 0
        self.transport: asyncio.Transport | None = None
        self._runner: web.AppRunner | None = None

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self.transport = request.transport
        try:
            await self.handler(ws)
        finally:
            self.done.set()
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def read_until(self, ws: web.WebSocketResponse, kind: aiohttp.WSMsgType) -> None:
        while True:
            message = await ws.receive(timeout=10)
            self.received.append(message)
            if message.type in (kind, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE):
                return


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def __call__(self, client: Any, payload: bytes, received_at: float) -> None:
        assert received_at > 0
        self.messages.append(payload)


PAYLOADS = ['{"w1":{"cpu_usage":1.5}}', "é" * 100, "x" * 126, "y" * 65_535, "z" * 200_000]


async def test_messages_of_every_length_class_arrive_whole(serve: Any) -> None:
    async def handler(ws: web.WebSocketResponse) -> None:
        for text in PAYLOADS:
            await ws.send_str(text)
        await ws.send_bytes(b"\x00binary")
        await server.read_until(ws, aiohttp.WSMsgType.CLOSE)

    server = await serve(handler)
    inbox = Inbox()
    client = await wsclient.connect("127.0.0.1", server.port, "/ws", inbox, tag="t")
    await asyncio.wait_for(client.first_message, 10)
    await async_wait_until(lambda: len(inbox.messages) == 6, what="six messages")
    assert inbox.messages == [text.encode() for text in PAYLOADS] + [b"\x00binary"]
    assert client.messages == 6 and client.tag == "t"
    client.close()
    await asyncio.wait_for(server.done.wait(), 10)
    assert server.received[-1].type == aiohttp.WSMsgType.CLOSE
    assert server.received[-1].data == 1000  # a normal closure
    await asyncio.wait_for(client.closed, 10)


async def test_a_fragmented_message_is_joined(serve: Any) -> None:
    """aiohttp sends whole messages; these fragments (RFC 6455 5.4: a text frame without
    FIN, a continuation frame with it) go to its transport as raw bytes."""

    async def handler(ws: web.WebSocketResponse) -> None:
        await ws.send_str("first")
        transport = server.transport
        assert transport is not None
        transport.write(bytes((0x01, 4)) + b'{"a"' + bytes((0x80, 4)) + b":1}\n")
        await ws.send_str("last")
        await server.read_until(ws, aiohttp.WSMsgType.CLOSE)

    server = await serve(handler)
    inbox = Inbox()
    client = await wsclient.connect("127.0.0.1", server.port, "/ws", inbox)
    await async_wait_until(lambda: len(inbox.messages) == 3, what="three messages")
    assert inbox.messages == [b"first", b'{"a":1}\n', b"last"]
    client.close()
    await asyncio.wait_for(server.done.wait(), 10)


async def test_pings_both_ways(serve: Any) -> None:
    async def handler(ws: web.WebSocketResponse) -> None:
        await ws.send_str("hello")
        await ws.ping(b"server-ping")
        await server.read_until(ws, aiohttp.WSMsgType.PONG)
        await server.read_until(ws, aiohttp.WSMsgType.PING)
        await ws.close()

    server = await serve(handler)
    client = await wsclient.connect("127.0.0.1", server.port, "/ws", Inbox())
    await asyncio.wait_for(client.first_message, 10)
    await async_wait_until(lambda: server.received, what="the pong")
    client.ping()
    await asyncio.wait_for(server.done.wait(), 10)
    kinds = [(m.type, m.data) for m in server.received]
    assert kinds == [(aiohttp.WSMsgType.PONG, b"server-ping"), (aiohttp.WSMsgType.PING, b"bench")]


async def test_server_close_is_answered(serve: Any) -> None:
    async def handler(ws: web.WebSocketResponse) -> None:
        await ws.send_str("bye")
        await ws.close(code=4000, message=b"going")  # waits for the client's close frame

    server = await serve(handler)
    client = await wsclient.connect("127.0.0.1", server.port, "/ws", Inbox())
    await asyncio.wait_for(client.closed, 10)
    await asyncio.wait_for(server.done.wait(), 10)
    assert client.close_code == 4000


async def test_refused_upgrade_fails_the_connect(serve: Any) -> None:
    async def handler(ws: web.WebSocketResponse) -> None:
        await ws.close()

    server = await serve(handler)
    with pytest.raises(WSHandshakeError, match="404"):
        await wsclient.connect("127.0.0.1", server.port, "/nowhere", Inbox())
