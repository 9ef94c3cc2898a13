"""WorkerRegistry: which workers the admin authorised, their addresses and resources,
and which of them hold a live session (have called RegisterWorker since this master
started). Pure in-memory logic; persistence is a listener (see master/persistence.py).

Each accepted RegisterWorker opens a new session with its own number (``session_of``):
the master's MasterRegister retries (master/worker_link.py) stop once the worker holds a
session newer than the one it had when the call began.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from cloudai.addresses import split_host_port
from cloudai.proto import pb
from cloudai.validation import check_id


@dataclass(slots=True)
class WorkerEntry:
    worker_id: str
    address: str  # "ip:port" of the worker's gRPC server
    total_cpu: float = 0.0
    total_memory: float = 0.0
    total_storage: float = 0.0
    total_gpu: float = 0.0
    task_limits: str = ""  # WorkerInfo.task_limits: "cgroup-v2", "cgroup-v1", "accounted"
    session: bool = False  # RegisterWorker accepted since this master started
    # SHA-256 of the certificate the worker joined with: the only one that may act for
    # this id (secure mode). None: not joined (plaintext mode, or authorised only).
    cert_fingerprint: str | None = None
    registered_at: float = 0.0
    updated_at: float = 0.0

    def copy(self) -> WorkerEntry:
        return replace(self)


_TASK_LIMITS = re.compile(r"[a-z0-9-]{1,16}")


def task_limits_of(info: pb.WorkerInfo) -> str:
    """WorkerInfo.task_limits as stored: a short lower-case word ("cgroup-v1", ...);
    anything else (not said, or not a word the store can hold) is ""."""
    return info.task_limits if _TASK_LIMITS.fullmatch(info.task_limits) else ""


class RegistryError(ValueError):
    pass


ChangeListener = Callable[[str, "WorkerEntry | None"], None]


def registration_hint(worker_id: str, address: str = "<ip:port>") -> str:
    return (
        f"worker {worker_id!r} is not authorised on this master; an admin must run: "
        f"register {worker_id} {address or '<ip:port>'}"
    )


class WorkerRegistry:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, WorkerEntry] = {}
        self._listeners: list[ChangeListener] = []
        self._clock = clock
        self._sessions: dict[str, int] = {}  # worker id -> number of its live session
        self._session_count = 0
        self.refused_registrations = 0

    def add_listener(self, listener: ChangeListener) -> None:
        """``listener(worker_id, entry_or_None)`` after each change (None: removed)."""
        self._listeners.append(listener)

    def _changed(self, worker_id: str, entry: WorkerEntry | None) -> None:
        for listener in self._listeners:
            listener(worker_id, entry)

    # -- admin -----------------------------------------------------------------------------

    def authorise(self, worker_id: str, address: str = "") -> WorkerEntry:
        """Pre-register a worker (the admin's ``register``). Keeps its session if any.

        An empty address authorises a worker that registers itself (``--master``) and
        tells its address in RegisterWorker.
        """
        try:
            check_id("worker_id", worker_id)
            if address:
                split_host_port(address)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        now = self._clock()
        entry = self._entries.get(worker_id)
        if entry is None:
            entry = WorkerEntry(worker_id, address, registered_at=now, updated_at=now)
            self._entries[worker_id] = entry
        elif address:
            entry.address = address
            entry.updated_at = now
        self._changed(worker_id, entry.copy())
        return entry.copy()

    def bind_certificate(self, worker_id: str, fingerprint: str) -> WorkerEntry:
        """A worker joined: authorise its id (if new) and bind it to its certificate; any
        certificate it held before stops working."""
        entry = self._entries.get(worker_id)
        now = self._clock()
        if entry is None:
            check_id("worker_id", worker_id)
            entry = WorkerEntry(worker_id, "", registered_at=now, updated_at=now)
            self._entries[worker_id] = entry
        entry.cert_fingerprint = fingerprint
        entry.session = False  # it registers again, with the new certificate
        self._sessions.pop(worker_id, None)
        entry.updated_at = now
        self._changed(worker_id, entry.copy())
        return entry.copy()

    def certificate_of(self, worker_id: str) -> str | None:
        entry = self._entries.get(worker_id)
        return None if entry is None else entry.cert_fingerprint

    def revoke(self, worker_id: str) -> bool:
        entry = self._entries.pop(worker_id, None)
        self._sessions.pop(worker_id, None)
        if entry is None:
            return False
        self._changed(worker_id, None)
        return True

    def load(self, entry: WorkerEntry) -> None:
        """Restore an entry from the store at start-up (no session, no listeners called)."""
        entry = entry.copy()
        entry.session = False
        self._entries[entry.worker_id] = entry
        self._sessions.pop(entry.worker_id, None)

    # -- worker RPCs -----------------------------------------------------------------------

    def register(self, info: pb.WorkerInfo) -> tuple[bool, str]:
        """A worker's RegisterWorker. Refused unless an admin authorised the worker."""
        entry = self._entries.get(info.worker_id)
        if entry is None:
            self.refused_registrations += 1
            return False, registration_hint(info.worker_id, info.worker_ip)
        if info.worker_ip:  # existing Go workers send it empty: keep the admin's address
            try:
                split_host_port(info.worker_ip)
            except ValueError as exc:
                return False, str(exc)
            entry.address = info.worker_ip
        entry.total_cpu = info.total_cpu
        entry.total_memory = info.total_memory
        entry.total_storage = info.total_storage
        entry.total_gpu = info.total_gpu
        entry.task_limits = task_limits_of(info)
        entry.session = True
        self._session_count += 1
        self._sessions[entry.worker_id] = self._session_count
        entry.updated_at = self._clock()
        self._changed(entry.worker_id, entry.copy())
        return True, f"worker {entry.worker_id} registered"

    def has_session(self, worker_id: str) -> bool:
        entry = self._entries.get(worker_id)
        return entry is not None and entry.session

    def session_of(self, worker_id: str) -> int | None:
        """The number of the worker's live session (higher: newer); None without one."""
        return self._sessions.get(worker_id) if self.has_session(worker_id) else None

    # -- reads -----------------------------------------------------------------------------

    def get(self, worker_id: str) -> WorkerEntry | None:
        entry = self._entries.get(worker_id)
        return None if entry is None else entry.copy()

    def with_address(self) -> list[str]:
        """The ids of the workers whose gRPC address is known (the master can call them)."""
        return [entry.worker_id for entry in self._entries.values() if entry.address]

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._entries

    def __iter__(self) -> Iterator[WorkerEntry]:
        return iter([entry.copy() for entry in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)
