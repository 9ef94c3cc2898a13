"""``Bus`` on NATS (nats-py): core NATS subjects, request/reply with NATS's inbox.

Reconnects by itself (every 0.5 s, forever) and says so in one line per state change;
while disconnected, publishes are buffered (up to ``pending_bytes``) and flushed on
reconnect. Authentication (docs/SCALING.md): a credentials file (``creds``: NKey/JWT, as
``nsc`` writes it) and TLS with a CA (``tls_ca``), optionally a client certificate.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

from cloudai.bus.base import BusUnavailable, Handler

log = logging.getLogger(__name__)


class NatsBus:
    def __init__(
        self,
        servers: list[str],
        *,
        name: str = "cloudai",
        creds: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        connect_timeout: float = 2.0,
        pending_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.servers = servers
        self.name = name
        self._creds = creds
        self._tls_ca, self._tls_cert, self._tls_key = tls_ca, tls_cert, tls_key
        self._connect_timeout = connect_timeout
        self._pending_bytes = pending_bytes
        self._nc: Client | None = None
        self._closing = False
        self.disconnects = 0
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _tls(self) -> ssl.SSLContext | None:
        if self._tls_ca is None and self._tls_cert is None:
            return None
        context = ssl.create_default_context(
            cafile=str(self._tls_ca) if self._tls_ca is not None else None
        )
        if self._tls_cert is not None and self._tls_key is not None:
            context.load_cert_chain(str(self._tls_cert), str(self._tls_key))
        return context

    async def connect(self) -> None:
        options: dict[str, Any] = {
            "servers": self.servers,
            "name": self.name,
            "connect_timeout": self._connect_timeout,
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": 1,  # the first connection: fail fast (below)
            "allow_reconnect": True,
            "pending_size": self._pending_bytes,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if self._creds is not None:
            options["user_credentials"] = str(self._creds)
        tls = self._tls()
        if tls is not None:
            options["tls"] = tls
        try:
            nc = await nats.connect(**options)
        except (NoServersError, OSError, NatsError) as exc:
            raise BusUnavailable(
                f"cannot reach the bus at {', '.join(self.servers)}: {exc or type(exc).__name__}"
            ) from None
        nc.options["max_reconnect_attempts"] = -1  # connected once: reconnect forever
        self._nc = nc

    def _client(self) -> Client:
        if self._nc is None:
            raise BusUnavailable("not connected to the bus")
        return self._nc

    async def publish(self, subject: str, data: bytes) -> None:
        try:
            await self._client().publish(subject, data)
        except NatsError as exc:
            raise BusUnavailable(f"bus publish failed: {exc}") from None

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            msg = await self._client().request(subject, data, timeout=timeout)
        except NoRespondersError:
            raise BusUnavailable("nobody answers on the bus (is the master connected?)") from None
        except NatsTimeout:
            raise BusUnavailable(f"no answer on the bus within {timeout:g} s") from None
        except NatsError as exc:
            raise BusUnavailable(f"bus request failed: {exc}") from None
        data_: bytes = msg.data
        return data_

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> None:
        await self._client().subscribe(subject, queue=queue, cb=handler, pending_msgs_limit=65536)

    async def flush(self, timeout: int = 2) -> None:
        await self._client().flush(timeout)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._closing = True
        if nc is None or nc.is_closed:
            return
        try:
            await nc.drain()
        except Exception:  # closing anyway: say nothing more than the state change
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("bus: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.disconnects += 1
        log.warning("bus: disconnected from %s; reconnecting", ", ".join(self.servers))

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        url = self._nc.connected_url if self._nc is not None else None
        log.info("bus: reconnected (%s)", url.netloc if url is not None else "?")
