"""A minimal gRPC-over-HTTP/2 client connection for the load generator (asyncio Protocol).

Why not grpc.aio: on the 2-core machine a grpc.aio unary call costs the *client* about
240-280 us of CPU, as much as the server it measures, so a Python generator would eat the
core the master needs. This client pre-encodes request headers once per connection,
writes every frame of one loop iteration in one ``write`` and costs ~10-20 us per call.

Why not the ``h2`` library (sans-I/O HTTP/2): measured at the same load it makes the
generator cost 1.4-2.4x as much CPU (a unary call ~190-240 us of pure Python instead of
~12 us, a streamed message ~8-10 us instead of ~1 us); at 1,000 unary calls/s the
generator would cost as much as the gRPC server it measures (docs/PERFORMANCE.md, "The
bench's own clients"). The client is tested against a real grpc.aio server
(tests/integration/bench).

Scope: HTTP/2 over cleartext (h2c, prior knowledge) or TLS (ALPN ``h2``; ``cloudai
bench --tls``: each connection presents one simulated worker's certificate), unary
calls and client-streaming calls, send-side flow control (connection and stream
windows), SETTINGS/PING acks, GOAWAY, RST_STREAM. A call succeeds when the server sent
a response message and ended the stream; otherwise it fails, with the
``grpc-status``/``grpc-message`` of the trailers when they could be decoded.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from cloudai.bench import h2frames as h2

# on_response(token, ok, response message or None, error text)
ResponseHandler = Callable[[Any, bool, bytes | None, str], None]

_RECEIVE_WINDOW = 1 << 30  # what we grant the server for the connection


class _Stream:
    __slots__ = ("block", "data", "ended_local", "headers_done", "token", "window")

    def __init__(self, token: Any, window: int) -> None:
        self.token = token
        self.window = window
        self.data: bytes | None = None
        self.block = b""  # header block being assembled (HEADERS + CONTINUATION)
        self.headers_done = True
        self.ended_local = False


class H2Connection(asyncio.Protocol):
    def __init__(self, authority: str, on_response: ResponseHandler) -> None:
        self.authority = authority
        self.on_response = on_response
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._reader = h2.FrameReader()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._next_id = 1
        self._streams: dict[int, _Stream] = {}
        self._conn_window = h2.DEFAULT_WINDOW
        self._stream_window = h2.DEFAULT_WINDOW
        self._max_frame = h2.DEFAULT_MAX_FRAME
        self._max_streams = 2**31
        self._received = 0  # DATA bytes received since our last connection WINDOW_UPDATE
        self._blocked: deque[tuple[int, bytes, bool]] = deque()  # (stream, payload, end)
        self._waiting: deque[tuple[bytes, bytes, Any]] = deque()  # unary over max streams
        self._continuation: int = 0  # stream whose header block is open, 0 if none
        self.goaway = False
        self.error: str | None = None
        self.calls = 0

    def request_headers(self, path: str) -> bytes:
        """The request's header block, encoded once and reused for every call."""
        return h2.request_headers(path, self.authority)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(
            h2.PREFACE
            + h2.settings(
                {
                    h2.SETTINGS_HEADER_TABLE_SIZE: 0,
                    h2.SETTINGS_ENABLE_PUSH: 0,
                    h2.SETTINGS_INITIAL_WINDOW_SIZE: h2.MAX_WINDOW,
                }
            )
            + h2.window_update(0, _RECEIVE_WINDOW - h2.DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_all(self.error or f"connection lost: {exc or 'closed by peer'}")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.error or "connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for f in self._reader.feed(data):
            kind = f.kind
            if kind == h2.DATA:
                self._on_data(f)
            elif kind == h2.HEADERS:
                self._on_headers(f)
            elif kind == h2.CONTINUATION:
                self._on_continuation(f)
            elif kind == h2.SETTINGS:
                self._on_settings(f)
            elif kind == h2.WINDOW_UPDATE:
                self._on_window_update(f)
            elif kind == h2.PING:
                if not f.flags & h2.FLAG_ACK:
                    self._write(h2.frame(h2.PING, h2.FLAG_ACK, 0, f.payload))
            elif kind == h2.RST_STREAM:
                code = int.from_bytes(f.payload[:4], "big")
                self._finish(f.stream_id, False, f"stream reset by the server (code {code})")
            elif kind == h2.GOAWAY:
                self._on_goaway(f)
        if self._received >= _RECEIVE_WINDOW // 2:
            self._write(h2.window_update(0, self._received))
            self._received = 0

    # -- calls ----------------------------------------------------------------------------

    def unary(self, headers: bytes, message: bytes, token: Any) -> None:
        """Start a unary call; ``on_response(token, ...)`` is called when it ends."""
        if self.transport is None or self.goaway:
            self.on_response(token, False, None, self.error or "connection not open")
            return
        if len(self._streams) >= self._max_streams:
            self._waiting.append((headers, message, token))
            return
        self.calls += 1
        stream_id = self._open(headers, token)
        self._send_data(stream_id, h2.grpc_message(message), True)

    def open_stream(self, headers: bytes, token: Any) -> int:
        """Start a client-streaming call; returns its stream id."""
        if self.transport is None or self.goaway:
            raise ConnectionError(self.error or "connection not open")
        if len(self._streams) >= self._max_streams:
            raise ConnectionError("the server's MAX_CONCURRENT_STREAMS is reached")
        self.calls += 1
        return self._open(headers, token)

    def send(self, stream_id: int, message: bytes) -> bool:
        """Queue one message on a stream; False when the stream is gone."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended_local or self.transport is None:
            return False
        self._send_data(stream_id, h2.grpc_message(message), False)
        return True

    def end_stream(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended_local:
            return
        self._send_data(stream_id, b"", True)

    @property
    def backlog(self) -> int:
        """Bytes waiting for the server's flow-control window."""
        return sum(len(payload) for _sid, payload, _end in self._blocked)

    @property
    def in_flight(self) -> int:
        return len(self._streams) + len(self._waiting)

    def close(self) -> None:
        if self.transport is not None:
            self.flush()
            self._write(h2.frame(h2.GOAWAY, 0, 0, b"\x00\x00\x00\x00\x00\x00\x00\x00"))
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        out.clear()

    # -- internals ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def _open(self, headers: bytes, token: Any) -> int:
        stream_id = self._next_id
        self._next_id += 2
        self._streams[stream_id] = _Stream(token, self._stream_window)
        self._write(h2.frame(h2.HEADERS, h2.FLAG_END_HEADERS, stream_id, headers))
        return stream_id

    def _send_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        if self._blocked or not self._try_send(stream_id, payload, end):
            self._blocked.append((stream_id, payload, end))

    def _try_send(self, stream_id: int, payload: bytes, end: bool) -> bool:
        stream = self._streams.get(stream_id)
        if stream is None:
            return True  # the stream ended meanwhile (reset): drop what it had queued
        n = len(payload)
        if n > self._conn_window or n > stream.window:
            return False
        self._conn_window -= n
        stream.window -= n
        max_frame = self._max_frame
        if n <= max_frame:
            flags = h2.FLAG_END_STREAM if end else 0
            self._write(h2.frame_header(h2.DATA, flags, stream_id, n) + payload)
        else:
            for start in range(0, n, max_frame):
                chunk = payload[start : start + max_frame]
                last = start + max_frame >= n
                flags = h2.FLAG_END_STREAM if (end and last) else 0
                self._write(h2.frame(h2.DATA, flags, stream_id, chunk))
        if end:
            stream.ended_local = True
        return True

    def _release_blocked(self) -> None:
        blocked = self._blocked
        while blocked:
            stream_id, payload, end = blocked[0]
            if not self._try_send(stream_id, payload, end):
                return
            blocked.popleft()

    def _on_data(self, f: h2.Frame) -> None:
        self._received += len(f.payload)
        stream = self._streams.get(f.stream_id)
        if stream is not None:
            payload = h2.strip_padding(f.flags, f.payload)
            stream.data = payload if stream.data is None else stream.data + payload
        if f.flags & h2.FLAG_END_STREAM:
            self._finish(f.stream_id, True, "")

    def _on_headers(self, f: h2.Frame) -> None:
        stream = self._streams.get(f.stream_id)
        block = h2.strip_padding(f.flags, f.payload, priority=True)
        end_stream = bool(f.flags & h2.FLAG_END_STREAM)
        if not f.flags & h2.FLAG_END_HEADERS:
            self._continuation = f.stream_id
            if stream is not None:
                stream.block = block
                stream.headers_done = not end_stream  # remember END_STREAM via this flag
            return
        if end_stream:
            self._finish(f.stream_id, True, "", block)

    def _on_continuation(self, f: h2.Frame) -> None:
        stream = self._streams.get(f.stream_id)
        if stream is None:
            return
        stream.block += f.payload
        if f.flags & h2.FLAG_END_HEADERS:
            self._continuation = 0
            if not stream.headers_done:  # the HEADERS frame carried END_STREAM
                stream.headers_done = True
                self._finish(f.stream_id, True, "", stream.block)
            stream.block = b""

    def _finish(self, stream_id: int, ended: bool, error: str, trailers: bytes = b"") -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        messages = h2.grpc_messages(stream.data) if stream.data else []
        status = _grpc_status(trailers) if trailers else (None, None)
        ok = ended and bool(messages) and status[0] in (None, "0", "?")
        if not ok and not error:
            code, text = status
            error = f"grpc-status {code or '?'}: {text or 'no response message'}"
        if not stream.ended_local and self._blocked:  # the server ended it first
            self._blocked = deque(b for b in self._blocked if b[0] != stream_id)
        self.on_response(stream.token, ok, messages[0] if messages else None, error)
        if self._waiting and len(self._streams) < self._max_streams:
            headers, message, token = self._waiting.popleft()
            self.unary(headers, message, token)

    def _on_settings(self, f: h2.Frame) -> None:
        if f.flags & h2.FLAG_ACK:
            return
        values = h2.parse_settings(f.payload)
        if h2.SETTINGS_INITIAL_WINDOW_SIZE in values:
            new = values[h2.SETTINGS_INITIAL_WINDOW_SIZE]
            delta = new - self._stream_window
            self._stream_window = new
            for stream in self._streams.values():
                stream.window += delta
        if h2.SETTINGS_MAX_FRAME_SIZE in values:
            self._max_frame = values[h2.SETTINGS_MAX_FRAME_SIZE]
        if h2.SETTINGS_MAX_CONCURRENT_STREAMS in values:
            self._max_streams = values[h2.SETTINGS_MAX_CONCURRENT_STREAMS]
        self._write(h2.frame(h2.SETTINGS, h2.FLAG_ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._release_blocked()

    def _on_window_update(self, f: h2.Frame) -> None:
        increment = int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF
        if f.stream_id == 0:
            self._conn_window += increment
        else:
            stream = self._streams.get(f.stream_id)
            if stream is not None:
                stream.window += increment
        if self._blocked:
            self._release_blocked()

    def _on_goaway(self, f: h2.Frame) -> None:
        last = int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF
        code = int.from_bytes(f.payload[4:8], "big")
        self.goaway = True
        self.error = f"GOAWAY from the server (code {code})"
        for stream_id in [s for s in self._streams if s > last]:
            self._finish(stream_id, False, self.error)

    def _fail_all(self, error: str) -> None:
        for stream_id in list(self._streams):
            self._finish(stream_id, False, error)
        waiting, self._waiting = self._waiting, deque()
        for _headers, _message, token in waiting:
            self.on_response(token, False, None, error)


def _grpc_status(block: bytes) -> tuple[str | None, str | None]:
    try:
        headers = dict(h2.decode_headers(block))
    except (IndexError, ValueError):
        return "?", None
    if "grpc-status" not in headers:
        return ("?", None) if None in headers else (None, None)
    return headers.get("grpc-status"), headers.get("grpc-message")


async def connect(
    host: str,
    port: int,
    on_response: ResponseHandler,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> H2Connection:
    """Open a connection and wait for the server's SETTINGS. With ``ssl_context``: TLS,
    the server's certificate checked for ``server_hostname`` (default ``host``); the
    context must offer ALPN ``h2`` and the server must select it."""
    loop = asyncio.get_running_loop()
    authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    transport, protocol = await loop.create_connection(
        lambda: H2Connection(authority, on_response),
        host,
        port,
        ssl=ssl_context,
        server_hostname=(server_hostname or host) if ssl_context is not None else None,
    )
    if ssl_context is not None:
        tls = transport.get_extra_info("ssl_object")
        selected = tls.selected_alpn_protocol() if tls is not None else None
        if selected != "h2":
            transport.close()
            raise ConnectionError(f"the server did not select HTTP/2 over TLS (ALPN {selected})")
    await asyncio.wait_for(protocol.ready, timeout=10.0)
    return protocol
