"""The benchmark's dashboard clients, on the ``picows`` WebSocket library.

``picows`` (Cython) does the opening handshake, the framing and answers pings; this
listener joins fragments, answers the server's close and hands every complete message to
``on_message(client, payload, received_at)`` as ``bytes``; ``received_at`` is one
``time.monotonic()`` per read, shared by the messages of that read. ``pause()`` stops
reading from the socket (a client that reads nothing); ``resume()`` starts again.

Why picows: a client must cost far less than the server it measures. At the same load
it costs what the bench's former hand-written client did (~11-24 us per frame received,
system calls included), where ``wsproto`` costs two to three times as much and falls
behind at 1,000 clients (docs/PERFORMANCE.md, "The bench's own clients").
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

MessageHandler = Callable[["WsClient", bytes, float], None]

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)
_TCPI_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in Linux's struct tcp_info


def tcp_bytes_received(sock: socket.socket | None) -> int | None:
    """Bytes the kernel received on ``sock`` (TCP_INFO, Linux 4.1+): what came over the
    wire, WebSocket headers and compression included; None where it cannot be read."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _TCPI_BYTES_RECEIVED + 8:
        return None
    return int(struct.unpack_from("Q", info, _TCPI_BYTES_RECEIVED)[0])


class WsClient(WSListener):
    def __init__(self, on_message: MessageHandler, tag: Any = None) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.tag = tag  # whatever the owner wants to attach (e.g. a tracker)
        self.transport: WSTransport | None = None
        self.first_message: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.messages = 0
        self.bytes = 0  # payload bytes received
        self.paused = False
        self.last_received = 0.0  # monotonic time of the last read
        self.close_code: int | None = None
        self.sock: socket.socket | None = None  # the TCP socket, for tcp_bytes_received
        self._parts: list[bytes] = []
        self._now = 0.0
        self._same_read = False  # the previous frame was not the last of its read

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if not self._same_read:
            self._now = self.last_received = time.monotonic()
        self._same_read = not frame.last_in_buffer
        kind = frame.msg_type
        if kind in _DATA:
            payload = frame.get_payload_as_bytes()
            self.bytes += len(payload)
            if not frame.fin:
                self._parts.append(payload)
                return
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts.clear()
            self.messages += 1
            self.on_message(self, payload, self._now)
            if not self.first_message.done():
                self.first_message.set_result(None)
        elif kind == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.close_code = code.value
            transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        if not self.first_message.done():
            self.first_message.set_exception(ConnectionError("connection closed"))
            self.first_message.exception()  # a failed client is reported, not raised
        if not self.closed.done():
            self.closed.set_result(None)

    # -- control ----------------------------------------------------------------------------

    def ping(self) -> None:
        if self.transport is not None:
            self.transport.send_ping(b"bench")

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.transport.underlying_transport.pause_reading()
            self.paused = True

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.transport.underlying_transport.resume_reading()
        self.paused = False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: MessageHandler,
    tag: Any = None,
    receive_buffer: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    headers: dict[str, str] | None = None,
) -> WsClient:
    """Connect and complete the handshake. ``receive_buffer`` sets SO_RCVBUF (bytes).

    With ``ssl_context``: WSS, the server's certificate checked for ``server_hostname``
    (default ``host``). ``headers`` go with the upgrade request (e.g. Authorization)."""
    loop = asyncio.get_running_loop()

    async def new_socket(_url: Any) -> socket.socket:
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
        sockets.append(sock)
        return sock

    sockets: list[socket.socket] = []
    authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    extra_headers = [("User-Agent", "cloudai-bench"), *(headers or {}).items()]
    if ssl_context is None:
        _transport, client = await ws_connect(
            lambda: WsClient(on_message, tag),
            f"ws://{authority}{path}",
            socket_factory=new_socket,
            extra_headers=extra_headers,
        )
    else:
        _transport, client = await ws_connect(
            lambda: WsClient(on_message, tag),
            f"wss://{authority}{path}",
            ssl_context=ssl_context,
            socket_factory=new_socket,
            extra_headers=extra_headers,
            server_hostname=server_hostname or host,
        )
    listener = cast(WsClient, client)
    listener.sock = sockets[-1] if sockets else None
    return listener
