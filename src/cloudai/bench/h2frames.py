"""HTTP/2 and gRPC framing for the load generator's client (RFC 7540, RFC 7541). Pure.

Just enough of HTTP/2 for gRPC calls from a client: frame encoding and parsing, request
header blocks encoded without Huffman or the dynamic table, and a stateless decoder for
the few response headers worth reporting (``grpc-status``, ``grpc-message``). The client
advertises a header table size of 0, so the server's responses never refer to dynamic
table entries; Huffman-coded strings decode to ``None``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1

_HEADER = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_GRPC_PREFIX = struct.Struct(">BL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return _HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    payload = b"".join(struct.pack(">HL", key, value) for key, value in values.items())
    return frame(SETTINGS, 0, 0, payload)


def parse_settings(payload: bytes) -> dict[int, int]:
    return {
        key: value
        for key, value in (
            struct.unpack_from(">HL", payload, offset) for offset in range(0, len(payload), 6)
        )
    }


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment & 0x7FFFFFFF))


def grpc_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return _GRPC_PREFIX.pack(0, len(message)) + message


def grpc_messages(data: bytes) -> list[bytes]:
    """Split a DATA payload stream into gRPC messages (complete ones only)."""
    out = []
    offset = 0
    while len(data) - offset >= 5:
        _flag, length = _GRPC_PREFIX.unpack_from(data, offset)
        if len(data) - offset - 5 < length:
            break
        out.append(bytes(data[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return out


# -- HPACK ---------------------------------------------------------------------------------

STATIC_TABLE: tuple[tuple[str, str], ...] = (
    ("", ""),  # index 0 is unused
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)


def encode_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    """HPACK integer with an N-bit prefix; ``flags`` fill the byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_int(data: bytes, offset: int, prefix_bits: int) -> tuple[int, int]:
    """(value, next offset)."""
    limit = (1 << prefix_bits) - 1
    value = data[offset] & limit
    offset += 1
    if value < limit:
        return value, offset
    shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def _string(value: str) -> bytes:
    raw = value.encode()
    return encode_int(len(raw), 7) + raw


def _literal(name_index: int, value: str) -> bytes:
    """Literal header field without indexing, indexed name (RFC 7541 6.2.2)."""
    return encode_int(name_index, 4) + _string(value)


def _literal_new(name: str, value: str) -> bytes:
    return b"\x00" + _string(name) + _string(value)


def request_headers(path: str, authority: str, user_agent: str = "cloudai-bench") -> bytes:
    """The HPACK block of a gRPC request, stateless (reusable for every call)."""
    return b"".join(
        (
            b"\x83",  # :method POST (static 3)
            b"\x86",  # :scheme http (static 6)
            _literal(4, path),  # :path
            _literal(1, authority),  # :authority
            _literal(31, "application/grpc"),  # content-type
            _literal_new("te", "trailers"),
            _literal(58, user_agent),  # user-agent
        )
    )


def _decode_string(data: bytes, offset: int) -> tuple[str | None, int]:
    huffman = bool(data[offset] & 0x80)
    length, offset = decode_int(data, offset, 7)
    raw = data[offset : offset + length]
    return (None if huffman else bytes(raw).decode("latin-1")), offset + length


def decode_headers(block: bytes) -> list[tuple[str | None, str | None]]:
    """Stateless, best-effort HPACK decode (static table only; no Huffman).

    Entries this decoder cannot resolve come out as None; that is only used to report
    why a call failed, never to decide whether it did.
    """
    out: list[tuple[str | None, str | None]] = []
    offset = 0
    n = len(block)
    while offset < n:
        byte = block[offset]
        if byte & 0x80:  # indexed field
            index, offset = decode_int(block, offset, 7)
            entry = STATIC_TABLE[index] if 0 < index < len(STATIC_TABLE) else (None, None)
            out.append(entry)
            continue
        if byte & 0xE0 == 0x20:  # dynamic table size update
            _size, offset = decode_int(block, offset, 5)
            continue
        prefix = 6 if byte & 0x40 else 4  # incremental indexing / without / never indexed
        index, offset = decode_int(block, offset, prefix)
        name: str | None
        if index:
            name = STATIC_TABLE[index][0] if index < len(STATIC_TABLE) else None
        else:
            name, offset = _decode_string(block, offset)
        value, offset = _decode_string(block, offset)
        out.append((name, value))
    return out


# -- frame parsing -------------------------------------------------------------------------


@dataclass(slots=True)
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


class FrameReader:
    """Incremental frame parser: ``feed(bytes)`` yields every complete frame."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Frame]:
        buffer = self._buffer
        buffer += data
        offset = 0
        end = len(buffer)
        unpack = _HEADER.unpack_from
        while end - offset >= 9:
            hi, lo, kind, flags, stream_id = unpack(buffer, offset)
            length = (hi << 16) | lo
            if end - offset - 9 < length:
                break
            start = offset + 9
            offset = start + length
            yield Frame(kind, flags, stream_id & 0x7FFFFFFF, bytes(buffer[start:offset]))
        if offset:
            del buffer[:offset]

    def __len__(self) -> int:
        return len(self._buffer)


def strip_padding(flags: int, payload: bytes, priority: bool = False) -> bytes:
    """The payload of a DATA/HEADERS frame without padding (and priority fields)."""
    start = 0
    end = len(payload)
    if flags & FLAG_PADDED:
        end -= payload[0]
        start = 1
    if priority and flags & FLAG_PRIORITY:
        start += 5
    return payload[start:end]
