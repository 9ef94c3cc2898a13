"""WebSocket (RFC 6455) client-side framing: handshake, frame parser, masked frames. Pure.

The benchmark's dashboard clients must cost far less than the server they measure (a
client built on the websockets library costs ~35 us per message), so this parser does
the least possible: it finds frame boundaries, joins fragments and hands complete
messages over as ``bytes``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    pass


def handshake_request(host: str, path: str, key: bytes) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        "User-Agent: cloudai-bench\r\n\r\n"
    ).encode()


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def parse_handshake_response(data: bytes, key: bytes) -> int | None:
    """Length of the response head when complete and valid; None when more is needed."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > 16384:
            raise HandshakeError("handshake response too long")
        return None
    head = data[:end].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise HandshakeError(f"server refused the upgrade: {status_line}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept", "").encode() != accept_value(key):
        raise HandshakeError("bad Sec-WebSocket-Accept")
    return end + 4


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def client_frame(opcode: int, payload: bytes = b"", key: bytes | None = None) -> bytes:
    """A masked client frame (FIN set)."""
    key = os.urandom(4) if key is None else key
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + struct.pack(">H", n)
    else:
        head += bytes((0x80 | 127,)) + struct.pack(">Q", n)
    return head + key + _mask(payload, key)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it (used by tests)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + struct.pack(">H", n) + payload
    return bytes((first, 127)) + struct.pack(">Q", n) + payload


class FrameParser:
    """Feed bytes, get complete messages ``(opcode, payload)`` (fragments joined)."""

    __slots__ = ("_buffer", "_fragments", "_opcode")

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        out: list[tuple[int, bytes]] = []
        offset = 0
        end = len(data)
        while end - offset >= 2:
            b0 = data[offset]
            b1 = data[offset + 1]
            length = b1 & 0x7F
            pos = offset + 2
            if length == 126:
                if end - pos < 2:
                    break
                length = (data[pos] << 8) | data[pos + 1]
                pos += 2
            elif length == 127:
                if end - pos < 8:
                    break
                length = int.from_bytes(data[pos : pos + 8], "big")
                pos += 8
            mask = None
            if b1 & 0x80:
                if end - pos < 4:
                    break
                mask = data[pos : pos + 4]
                pos += 4
            if end - pos < length:
                break
            payload = data[pos : pos + length]
            if mask is not None:
                payload = _mask(payload, mask)
            offset = pos + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= OP_CLOSE:  # control frames are never fragmented
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                if fin:
                    out.append((self._opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif fin:
                out.append((opcode, payload))
            else:
                self._opcode = opcode
                self._fragments = [payload]
        if offset < end:
            self._buffer = data[offset:]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer) + sum(len(f) for f in self._fragments)
