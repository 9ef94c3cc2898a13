"""The worker's one typed settings object. Flows one way: flags -> settings -> node."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from cloudai.settings import CloudAISettings, default_data_root
from cloudai.validation import MAX_MESSAGE_BYTES, check_id

DEFAULT_WORKER_PORT = 50052
MIB = 1024 * 1024
GIB = 1024**3  # "GB" on the wire (WorkerInfo totals, Task.req_memory/req_storage)


def default_work_root() -> Path:
    return default_data_root() / "worker"


class WorkerSettings(CloudAISettings):
    """Flags over ``CLOUDAI_*`` env over the config file's ``[worker]`` table over these
    defaults (see ``cloudai.settings``)."""

    config_table: ClassVar[str] = "worker"

    worker_id: str = Field(default_factory=socket.gethostname)
    # gRPC server: the first free port from ``port`` (``port_search`` tries; 0: any free port).
    # None: 0.0.0.0 with TLS; loopback in plaintext mode (an unauthenticated worker is
    # reachable from other machines only when told so with --host).
    host: str | None = None
    port: int = DEFAULT_WORKER_PORT
    port_search: int = Field(100, ge=1)
    # Address the master uses to reach us ("ip" only); None: the local address that
    # routes towards the master (or the machine's primary address before one is known).
    advertise_host: str | None = None
    # Flow (2): register with this master ("HOST:PORT") ourselves. None: flow (1), wait
    # for a master's MasterRegister.
    master_address: str | None = None
    # Secure by default: join with a token (once; the certificate is kept in work_dir)
    # and speak mutual TLS. insecure: the plaintext protocol of the Go implementation.
    insecure: bool = False
    join_token: str | None = None
    heartbeat_interval: float = 5.0
    # None: default_work_root() / worker_id. Holds the result spool and task directories.
    work_dir: Path | None = None
    drain_timeout: float = 10.0  # SIGTERM: wait this long for running tasks, then cancel
    kill_grace: float = 5.0  # cancel: SIGTERM, then SIGKILL after this many seconds
    flush_timeout: float = 5.0  # shutdown: time allowed to deliver pending results
    backoff_initial: float = 0.5
    heartbeat_backoff_max: float = 15.0  # master unreachable: cap of the retry delay
    register_backoff_max: float = 30.0  # master refuses RegisterWorker: cap of the delay
    rpc_timeout: float = 5.0
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_log_bytes: int = MIB
    # Live task output (docs/TASK_OUTPUT.md): each run's output is kept on disk, up to
    # this many bytes, until the master holds it; 0: do not stream output.
    task_output_max_bytes: int = Field(64 * MIB, ge=0)
    use_stream: bool = True  # StreamHeartbeats when the master offers it
    docker_enabled: bool = True  # use a reachable Docker engine for tasks with an image
    # How process tasks are held to req_cpu/req_memory: "auto" (the kernel's cgroups when
    # they are writable, else accounted) or "accounted" (counted, never enforced).
    task_limits: Literal["auto", "accounted"] = "auto"
    shutdown_grace: float = 3.0  # in-flight RPCs when the gRPC server stops

    @model_validator(mode="after")
    def _valid(self) -> WorkerSettings:
        self.check()
        return self

    @property
    def listen_host(self) -> str:
        if self.host:
            return self.host
        return "127.0.0.1" if self.insecure else "0.0.0.0"

    def resolved_work_dir(self) -> Path:
        return self.work_dir if self.work_dir is not None else default_work_root() / self.worker_id

    def check(self) -> None:
        """Raise ValueError with a clear message for impossible values."""
        check_id("worker id", self.worker_id)
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat interval must be > 0 seconds")
        for name in ("drain_timeout", "kill_grace", "flush_timeout", "rpc_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 0 seconds")
        if self.backoff_initial <= 0:
            raise ValueError("back-off initial delay must be > 0")
        if min(self.heartbeat_backoff_max, self.register_backoff_max) < self.backoff_initial:
            raise ValueError("back-off caps must be >= the initial delay")
        if self.max_log_bytes < 1024:
            raise ValueError("max log bytes must be >= 1024")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")
