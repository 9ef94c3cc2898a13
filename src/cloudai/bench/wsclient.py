"""A light WebSocket client (asyncio Protocol) for the benchmark's dashboard clients.

It performs the opening handshake, answers pings and close frames, and hands every text
message to ``on_message(client, payload, received_at)``; ``received_at`` is one
``time.monotonic()`` per read, shared by the messages of that read. ``pause()`` stops
reading from the socket (a client that reads nothing); ``resume()`` starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from cloudai.bench import wsframes as ws

MessageHandler = Callable[["WsClient", bytes, float], None]


class WsClient(asyncio.Protocol):
    def __init__(self, host: str, path: str, on_message: MessageHandler, tag: Any = None) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.path = path
        self.on_message = on_message
        self.tag = tag  # whatever the owner wants to attach (e.g. a tracker)
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.first_message: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.messages = 0
        self.bytes = 0
        self.paused = False
        self.last_received = 0.0  # monotonic time of the last read
        self.close_code: int | None = None
        self._key = ws.new_key()
        self._head = b""
        self._parser = ws.FrameParser()
        self._open = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(ws.handshake_request(self.host, self.path, self._key))

    def data_received(self, data: bytes) -> None:
        now = self.last_received = time.monotonic()
        if not self._open:
            self._head += data
            try:
                size = ws.parse_handshake_response(self._head, self._key)
            except ws.HandshakeError as exc:
                self._fail(exc)
                return
            if size is None:
                return
            data, self._head = self._head[size:], b""
            self._open = True
            self.upgraded.set_result(None)
            if not data:
                return
        self.bytes += len(data)
        for opcode, payload in self._parser.feed(data):
            if opcode == ws.OP_TEXT or opcode == ws.OP_BINARY:
                self.messages += 1
                self.on_message(self, payload, now)
                if not self.first_message.done():
                    self.first_message.set_result(None)
            elif opcode == ws.OP_PING:
                self.send(ws.OP_PONG, payload)
            elif opcode == ws.OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.send(ws.OP_CLOSE, payload[:2])
                if self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- control ----------------------------------------------------------------------------

    def send(self, opcode: int, payload: bytes = b"") -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws.client_frame(opcode, payload))

    def ping(self) -> None:
        self.send(ws.OP_PING, b"bench")

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.transport.resume_reading()
        self.paused = False

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(ws.OP_CLOSE, (1000).to_bytes(2, "big"))
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        for future in (self.upgraded, self.first_message):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: a failed client is reported, not raised
        if self.transport is not None:
            self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: MessageHandler,
    tag: Any = None,
    receive_buffer: int | None = None,
) -> WsClient:
    """Connect and complete the handshake. ``receive_buffer`` sets SO_RCVBUF (bytes)."""
    import socket

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    _transport, client = await loop.create_connection(
        lambda: WsClient(authority, path, on_message, tag), sock=sock
    )
    await client.upgraded
    return client
