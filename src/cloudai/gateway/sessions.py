"""Which workers a gateway may take heartbeats from without asking the master (pure).

The master holds the sessions (``WorkerRegistry.has_session``). A gateway remembers the
answers it got: a worker it registered through the master, or one the master said holds
a session (``Session`` over the bus), with the certificate it showed (its SHA-256; "" in
plaintext mode). A ``forget`` event from the master drops one worker, ``reset`` (the
master restarted) drops all; the next heartbeat of a forgotten worker asks again.
"""

from __future__ import annotations

import hashlib


def certificate_key(pem: bytes) -> str:
    """What a session is bound to: the certificate's SHA-256; "" for none (plaintext)."""
    return hashlib.sha256(pem).hexdigest() if pem else ""


class SessionCache:
    def __init__(self, limit: int = 1_000_000) -> None:
        self._granted: dict[str, str] = {}  # worker id -> certificate key
        self._limit = limit
        self.boot_id: str | None = None  # the master whose answers these are
        self.forgotten = 0
        self.resets = 0

    def grant(self, worker_id: str, cert_key: str) -> None:
        if len(self._granted) >= self._limit and worker_id not in self._granted:
            self._granted.clear()  # bounded: everyone is asked again
        self._granted[worker_id] = cert_key

    def holds(self, worker_id: str, cert_key: str) -> bool:
        return self._granted.get(worker_id) == cert_key

    def forget(self, worker_id: str) -> None:
        if self._granted.pop(worker_id, None) is not None:
            self.forgotten += 1

    def reset(self, boot_id: str) -> bool:
        """The master (``boot_id``) started: forget everything unless it is the one we know.
        True when something was forgotten."""
        if boot_id == self.boot_id:
            return False
        self.boot_id = boot_id
        self.resets += 1
        had = bool(self._granted)
        self._granted.clear()
        return had

    def __len__(self) -> int:
        return len(self._granted)
