"""Dashboard clients that negotiate permessage-deflate, on aiohttp's WebSocket client.

``picows`` (``bench/wsclient.py``) does not implement permessage-deflate, so runs with
``--ws-deflate`` use aiohttp's client, which does (``compress=15``). It offers the same
surface as ``wsclient.WsClient`` to the client process: ``on_message(client, payload,
received_at)`` with the decompressed payload as bytes, ``first_message``, counters,
``pause``/``resume``, ``ping``, ``close`` and ``sock`` (for the bytes on the wire). It
costs the bench more CPU per frame than picows (every text frame is decoded to ``str``
and back), so compare master figures, not client figures, across the two.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any

import aiohttp

from cloudai.bench.wsclient import MessageHandler

DEFLATE_WINDOW_BITS = 15


class DeflateClient:
    def __init__(self, on_message: MessageHandler, tag: Any = None) -> None:
        loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.tag = tag
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.transport: object | None = None  # not None while connected (like WsClient)
        self.first_message: asyncio.Future[None] = loop.create_future()
        self.messages = 0
        self.bytes = 0  # payload bytes received (decompressed)
        self.paused = False
        self.last_received = 0.0
        self.sock: socket.socket | None = None
        self.compress = 0  # the window bits negotiated (0: the server did not compress)
        self._reading = asyncio.Event()
        self._reading.set()
        self._task: asyncio.Task[None] | None = None

    def start(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.transport = ws
        self.compress = ws.compress
        sock = ws.get_extra_info("socket")
        self.sock = sock if sock is not None else None
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                await self._reading.wait()
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    payload = msg.data.encode()
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    payload = msg.data
                else:
                    break
                self.last_received = now = time.monotonic()
                self.bytes += len(payload)
                self.messages += 1
                self.on_message(self, payload, now)  # type: ignore[arg-type]
                if not self.first_message.done():
                    self.first_message.set_result(None)
        finally:
            self.transport = None
            if not self.first_message.done():
                self.first_message.set_exception(ConnectionError("connection closed"))
                self.first_message.exception()

    def ping(self) -> None:
        if self.ws is not None and not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.ping(b"bench"))

    def pause(self) -> None:
        self._reading.clear()
        self.paused = True

    def resume(self) -> None:
        self._reading.set()
        self.paused = False

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.ws is not None and not self.ws.closed:
            asyncio.get_running_loop().create_task(self.ws.close())


async def connect(
    session: aiohttp.ClientSession,
    host: str,
    port: int,
    path: str,
    on_message: MessageHandler,
    tag: Any = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    headers: dict[str, str] | None = None,
) -> DeflateClient:
    """Connect with permessage-deflate offered (``compress=15``) and start reading."""
    authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    scheme = "ws" if ssl_context is None else "wss"
    client = DeflateClient(on_message, tag)
    ws = await session.ws_connect(
        f"{scheme}://{authority}{path}",
        compress=DEFLATE_WINDOW_BITS,
        autoping=True,
        max_msg_size=0,
        headers={"User-Agent": "cloudai-bench", **(headers or {})},
        ssl=ssl_context if ssl_context is not None else True,
        server_hostname=server_hostname,
    )
    client.start(ws)
    return client
