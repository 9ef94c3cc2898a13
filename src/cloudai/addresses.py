"""Parsing of listen ports and "host:port" addresses, shared by master and worker."""

from __future__ import annotations

import socket


def parse_port(value: str | int) -> int:
    """Accept ``50051``, ``"50051"`` and the existing ``":50051"`` form."""
    text = str(value).strip()
    if text.startswith(":"):
        text = text[1:]
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"invalid port {value!r}: expected a number or ':PORT'") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port {value!r}: must be in 0..65535")
    return port


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``"ip:port"`` / ``"[v6]:port"`` into host and port, with a clear error."""
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, parse_port(port_text)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]", "*")


def local_address_towards(remote_host: str, remote_port: int = 9) -> str:
    """The local IP this machine would use to reach ``remote_host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in remote_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((remote_host, remote_port))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
