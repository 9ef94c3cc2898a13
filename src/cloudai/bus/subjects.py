"""Subject names on the bus (pure).

Telemetry: ``<prefix>.telemetry.<worker>``, one subject per worker, so a consumer can
take every worker (``<prefix>.telemetry.>``) or one. A worker id may hold ``.`` (a NATS
token separator): it is escaped as ``%2E`` (and ``%`` as ``%25``), so every worker is
exactly one token and the mapping is reversible.

Calls a gateway forwards to the master: ``<prefix>.rpc.<Method>`` (request/reply).
Session events from the master to the gateways: ``<prefix>.sessions``.
The master's answers to a gateway's calls: ``_INBOX.<prefix>.gw.<gateway>.>``, one inbox
subtree per gateway (its id escaped as a worker's), so that NATS can let each gateway's
user read its own answers only.
"""

from __future__ import annotations

from cloudai.settings import secretless

DEFAULT_PREFIX = "cloudai"

FORWARDED_METHODS = (
    "RegisterWorker",
    "ReportTaskCompletion",
    "AppendTaskOutput",
    "Session",
    "ApiTokens",
)
"""What a gateway asks the master: three worker RPCs, ``Session`` (does this worker,
with this certificate, hold a session?), asked once per worker a gateway has not seen,
and ``ApiTokens`` (the API tokens' records, for a gateway that checks tokens itself)."""

INBOX_ROOT = "_INBOX"
"""NATS's inbox root: the master publishes its answers to whatever reply subject a call
names, so its user may publish on ``_INBOX.>``."""

MASTER_QUEUE = "cloudai-master"
"""The queue group the master answers calls in (one answer per call)."""


def escape_token(worker_id: str) -> str:
    """``worker_id`` as one subject token."""
    return worker_id.replace("%", "%25").replace(".", "%2E")


def unescape_token(token: str) -> str:
    return token.replace("%2E", ".").replace("%25", "%")


class Subjects:
    """The subjects of one cluster (``prefix``: several clusters may share a NATS)."""

    __slots__ = ("_telemetry", "prefix", "sessions", "telemetry_all")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c in prefix for c in " \t*>") or prefix.startswith("."):
            raise ValueError(f"bad bus subject prefix {prefix!r}")
        self.prefix = prefix
        self._telemetry = f"{prefix}.telemetry."
        self.telemetry_all = f"{prefix}.telemetry.>"
        self.sessions = f"{prefix}.sessions"

    def telemetry(self, worker_id: str) -> str:
        if "." in worker_id or "%" in worker_id:
            worker_id = escape_token(worker_id)
        return self._telemetry + worker_id

    def worker_of(self, subject: str) -> str | None:
        """The worker id of a telemetry subject; None for any other subject."""
        if not subject.startswith(self._telemetry):
            return None
        token = subject[len(self._telemetry) :]
        if not token or "." in token:
            return None
        return unescape_token(token)

    def rpc(self, method: str) -> str:
        if method not in FORWARDED_METHODS:
            raise ValueError(f"{method} is not forwarded over the bus")
        return f"{self.prefix}.rpc.{method}"

    def gateway_inbox(self, gateway_id: str) -> str:
        """The inbox prefix of gateway ``gateway_id``: the master's answers to its calls
        arrive under ``<this>.>``, and only there (docs/SCALING.md's permissions)."""
        if not gateway_id or any(c in gateway_id for c in " \t*>"):
            raise ValueError(f"bad gateway id {gateway_id!r} for a bus subject")
        return f"{INBOX_ROOT}.{self.prefix}.gw.{escape_token(gateway_id)}"


def bus_servers(text: str) -> list[str]:
    """``--bus`` as NATS server URLs: ``nats://h:4222`` (or ``tls://``), comma-separated;
    a bare ``host:port`` gets ``nats://``. ValueError for anything else."""
    servers = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            continue
        if "://" not in url:
            url = "nats://" + url
        if not url.startswith(("nats://", "tls://")):
            raise ValueError(
                f"a bus address is nats://HOST:PORT or tls://HOST:PORT, got {secretless(url)!r}"
            )
        servers.append(url)
    if not servers:
        raise ValueError("no bus address given")
    return servers
