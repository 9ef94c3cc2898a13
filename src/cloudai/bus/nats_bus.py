"""``Bus`` on NATS (nats-py): core NATS subjects, request/reply with NATS's inbox
(``_INBOX``, or a prefix of this process's own: ``inbox_prefix``, a gateway's).

Reconnects by itself (every 0.5 s, forever) and says so in one line per state change;
while disconnected, publishes are buffered (up to ``pending_bytes``) and flushed on
reconnect. Authentication (docs/SCALING.md, ``cloudai.bus.auth``): an NKey seed file
(``nkey``), a credentials file (``creds``: JWT and seed, as ``nsc`` writes it), or a user
and password or a token in the URLs; TLS with a CA (``tls_ca``), optionally a client
certificate. URLs are logged without their password. What the server refuses (a subject
this user may not use) is logged, at most once per power of two of such errors; a call
whose answers this user may not subscribe to says so in its error line.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import AuthorizationError, NoRespondersError, NoServersError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from cloudai.bus.auth import redact_url, shown_servers
from cloudai.bus.base import BusUnavailable, Handler
from cloudai.bus.settings import BusClientSettings
from cloudai.bus.subjects import bus_servers

log = logging.getLogger(__name__)


def _authorization_refused(exc: BaseException) -> bool:
    """The server refused the credential (nats-py raises it as a plain ``Error`` at the
    first connection, as ``AuthorizationError`` later)."""
    return isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower()


class NatsBus:
    def __init__(
        self,
        servers: list[str],
        *,
        name: str = "cloudai",
        creds: Path | None = None,
        nkey: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        connect_timeout: float = 2.0,
        pending_bytes: int = 8 * 1024 * 1024,
        inbox_prefix: str | None = None,
    ) -> None:
        self.servers = servers
        self.name = name
        self._creds = creds
        self._nkey = nkey
        self._tls_ca, self._tls_cert, self._tls_key = tls_ca, tls_cert, tls_key
        self._connect_timeout = connect_timeout
        self._pending_bytes = pending_bytes
        self.inbox_prefix = inbox_prefix  # None: NATS's _INBOX
        self._inbox_refused = False  # the server refused the subscription to our answers
        self._nc: Client | None = None
        self._closing = False
        self.disconnects = 0
        self.reconnects = 0
        self.refused = 0  # errors the server sent for this user's permissions
        self._last_error: Exception | None = None
        self._auth_refused = False  # an attempt of the current connect() was refused

    @classmethod
    def from_settings(
        cls, settings: BusClientSettings, name: str, inbox_prefix: str | None = None
    ) -> NatsBus:
        """The bus of a master's or a gateway's settings (``bus`` set); ``inbox_prefix``:
        where the answers to this process's requests arrive (None: NATS's ``_INBOX``)."""
        if not settings.bus:
            raise ValueError("no bus address given")
        return cls(
            bus_servers(settings.bus),
            name=name,
            creds=settings.bus_creds,
            nkey=settings.bus_nkey,
            tls_ca=settings.bus_tls_ca,
            inbox_prefix=inbox_prefix,
        )

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
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        if self._creds is not None:
            options["user_credentials"] = str(self._creds)
        if self._nkey is not None:
            options["nkeys_seed"] = str(self._nkey)
        tls = self._tls()
        if tls is not None:
            options["tls"] = tls
        self._last_error = None
        self._auth_refused = False
        try:
            nc = await nats.connect(**options)
        except (NoServersError, OSError, NatsError) as exc:
            # nats-py ends with "no servers available"; the error before it says why.
            cause = exc if self._last_error is None else self._last_error
            # A refused attempt may be followed by one the server resets: say the refusal.
            if self._auth_refused or _authorization_refused(cause):
                raise BusUnavailable(
                    f"the bus at {shown_servers(self.servers)} refused this process "
                    "(authorization violation: its credential, or none, is not a user there)"
                ) from None
            raise BusUnavailable(
                f"cannot reach the bus at {shown_servers(self.servers)}: "
                f"{cause or type(cause).__name__}"
            ) from None
        nc.options["max_reconnect_attempts"] = -1  # connected once: reconnect forever
        self._nc = nc
        log.info("bus: connected (%s)", self._connected_url())

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
            if self._inbox_refused:
                raise BusUnavailable(
                    f"no answer on the bus: it refused this process's subscription to "
                    f"{self.inbox_prefix or '_INBOX'}.> (its NATS user's permissions, "
                    "docs/SCALING.md)"
                ) from None
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

    def _connected_url(self) -> str:
        url = self._nc.connected_url if self._nc is not None else None
        return redact_url(url.geturl()) if url is not None else "?"

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if _authorization_refused(exc):
            self._auth_refused = True
        text = str(exc).lower()
        if "permissions violation" in text:
            inbox = f'subscription to "{self.inbox_prefix or "_INBOX"}.'.lower()
            if inbox in text:
                self._inbox_refused = True
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8...: a bounded log
                log.warning("bus: the server refused: %s (%d so far)", exc, self.refused)
            return
        log.debug("bus: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.disconnects += 1
        log.warning("bus: disconnected from %s; reconnecting", shown_servers(self.servers))

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        log.info("bus: reconnected (%s)", self._connected_url())
