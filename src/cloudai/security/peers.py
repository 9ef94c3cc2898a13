"""Who is calling: the identity in a gRPC peer's certificate (mutual TLS).

gRPC has verified the chain (signed by the cluster CA) before a handler runs; this reads
the role and the worker's (or gateway's) id from the certificate's URI name and its
fingerprint, which the master compares with the one it bound to that worker id when it
joined. Parsing a
certificate costs tens of microseconds, so results are cached by the certificate's PEM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cloudai.security import pki


class AuthContextSource(Protocol):
    """What of a gRPC servicer context this needs (grpc.aio.ServicerContext has it)."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    role: str  # "master", "worker", "gateway" or "unknown"
    worker_id: str | None  # a worker's certificate only
    fingerprint: str
    gateway_id: str | None = None  # a gateway's certificate only

    def describe(self) -> str:
        if self.role == "worker":
            return f"worker {self.worker_id!r}"
        if self.role == "gateway":
            return f"gateway {self.gateway_id!r}"
        return self.role


class PeerCertificates:
    def __init__(self, limit: int = 100_000) -> None:
        self._cache: dict[bytes, PeerIdentity] = {}
        self._limit = limit

    def of(self, context: AuthContextSource) -> PeerIdentity | None:
        """The caller's identity; None when it presented no certificate (plaintext)."""
        pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
        if pem is None:
            return None
        known = self._cache.get(pem)
        if known is not None:
            return known
        cert = pki.load_cert(pem)
        role, subject = pki.identity(cert)
        identity = PeerIdentity(
            role,
            subject if role == "worker" else None,
            pki.fingerprint(cert),
            gateway_id=subject if role == "gateway" else None,
        )
        if len(self._cache) >= self._limit:
            self._cache.clear()
        self._cache[pem] = identity
        return identity
