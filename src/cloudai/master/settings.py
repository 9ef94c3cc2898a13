"""The master's one typed settings object, and the only place its defaults live.

Built once by the entry point (flags over ``CLOUDAI_*`` env over the config file's
``[master]`` table over these defaults, see ``cloudai.settings``); flows one way:
settings -> server -> components.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from cloudai.addresses import parse_port, split_host_port
from cloudai.bus.settings import BusClientSettings
from cloudai.bus.subjects import bus_servers
from cloudai.settings import CloudAISettings, default_data_root, env_alias
from cloudai.store.urls import resolve_url
from cloudai.validation import MAX_MESSAGE_BYTES, InvalidMessage, check_id


def _port(value: object) -> object:
    """``50051`` or ``":50051"`` (the Go master's form of GRPC_PORT/HTTP_PORT)."""
    return parse_port(value) if isinstance(value, str) else value


Port = Annotated[int, BeforeValidator(_port), Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def parse_allowed_worker(text: str) -> tuple[str, str]:
    """``ID`` or ``ID=IP:PORT`` -> (worker id, address or ""). ValueError when invalid."""
    worker_id, _, address = text.strip().partition("=")
    try:
        check_id("worker_id", worker_id)
    except InvalidMessage as exc:
        raise ValueError(str(exc)) from None
    if address:
        split_host_port(address)
    return worker_id, address


class MasterSettings(CloudAISettings, BusClientSettings):
    config_table: ClassVar[str] = "master"
    bus_process: ClassVar[str] = "a secure master"

    master_id: str = Field(default_factory=socket.gethostname)
    grpc_host: str = "0.0.0.0"
    grpc_port: Port = Field(50051, validation_alias=env_alias("grpc_port", "GRPC_PORT"))
    http_host: str = "0.0.0.0"
    http_port: Port = Field(8080, validation_alias=env_alias("http_port", "HTTP_PORT"))
    http_enabled: bool = True
    # Address given to workers in MasterRegister; None: the local address routing to each.
    advertise_host: str | None = None
    inactivity_timeout: Seconds = 30.0
    heartbeat_queue_size: int = Field(8, ge=1)
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=1024)
    # The gRPC server kind (docs/PERFORMANCE.md, "Unary ingest at the Go master's pace"):
    # "aio" (grpc.aio on the event loop: every RPC, StreamHeartbeats included) or "sync"
    # (grpc.server on a thread pool: unary calls only, heartbeats handed to the event loop
    # in batches; StreamHeartbeats answers UNIMPLEMENTED, so our workers send unary).
    grpc_server: Literal["aio", "sync"] = "aio"
    ws_ping_interval: Seconds = 54.0
    ws_client_timeout: Seconds = 60.0
    # The fan-out tick (0: no batching); with many clients it grows to keep the frames
    # written to all clients together under ws_max_frame_rate a second.
    ws_batch_interval: float = Field(0.005, ge=0, allow_inf_nan=False)
    ws_max_frame_rate: Seconds = 40_000.0
    ws_compression: bool = False
    shutdown_grace: float = Field(3.0, ge=0)
    # Heartbeat times reach the store at most this late (the live state is in memory;
    # the stored time serves restarts and history). One batch per interval.
    store_flush_interval: Seconds = 5.0
    # Process tuning, applied by run_master() (``cloudai master`` and ``cloudai up``): a
    # short GIL switch interval bounds how long the event loop waits on a thread (the
    # store's writer) to ~0.5 ms instead of 5 ms; the GC pacer runs the garbage collector
    # in small steps on a timer (see master/gc_pacer.py), 0 turns it off.
    gil_switch_interval: float = Field(0.0005, ge=0)
    gc_young_interval: float = Field(0.1, ge=0)
    gc_full_interval: Seconds = 300.0
    gc_refresh_interval: Seconds = 3600.0
    # Lost tasks: an accepted task its worker never lists as running within
    # task_start_deadline, or one missing from its worker's heartbeats for
    # task_vanish_grace without a result; a task for a worker that is not connected waits
    # task_offline_wait for it.
    task_start_deadline: Seconds = 30.0
    task_vanish_grace: Seconds = 15.0
    task_offline_wait: Seconds = 600.0
    # A task with retries left runs again this long after a failure, doubling per
    # attempt, at most 30 s.
    task_retry_delay: Seconds = 1.0
    # Workers authorised at start: id -> "ip:port" (the master calls its MasterRegister)
    # or "" (the worker registers itself).
    allowed_workers: dict[str, str] = Field(default_factory=dict)
    # Secure by default: mutual TLS on gRPC, HTTPS/WSS, tokens for the API and streams
    # (docs/SECURITY.md). insecure: the plaintext protocol of the Go implementation.
    insecure: bool = False
    # HTTPS certificate and key the operator gives (PEM); default: the cluster's own.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    data_dir: Path = Field(default_factory=default_data_root)
    database_url: str | None = None
    admin_token: str | None = None
    interactive: bool | None = None  # the console; None: when stdin is a terminal
    # Alerts (docs/ALERTS.md): the rules file (TOML; reloaded on SIGHUP), the webhooks
    # that get Alertmanager's v2 API body (POST, a JSON list of alerts), and how often the
    # rules' `for` durations, repeats and the built-in rules are judged.
    alert_rules: Path | None = None
    alert_webhooks: list[str] = Field(default_factory=list)
    alert_evaluation_interval: Seconds = 1.0
    # Live task output (docs/TASK_OUTPUT.md): the first this many bytes of each task run's
    # output are kept under data_dir/task-output; the rest is acknowledged and dropped.
    task_output_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # ... deleted this many seconds after the task finished (its record and logs stay);
    # 0: kept for ever.
    task_output_retention: float = Field(30 * 86_400.0, ge=0, allow_inf_nan=False)
    # Telemetry history (docs/HISTORY.md): every heartbeat for history_raw_retention,
    # a minute's min/avg/max for history_minute_retention, an hour's for
    # history_hour_retention (seconds). Written in batches every history_flush_interval;
    # at most history_buffer_size heartbeats wait for the store (then the oldest are
    # dropped and counted: a heartbeat never waits for history). history_resolution: the
    # step of the finest points a query answers (the workers' heartbeat interval).
    history_enabled: bool = True
    history_raw_retention: Seconds = 86_400.0
    history_minute_retention: Seconds = 30 * 86_400.0
    history_hour_retention: Seconds = 365 * 86_400.0
    history_flush_interval: Seconds = 1.0
    history_prune_interval: Seconds = 60.0
    history_buffer_size: int = Field(200_000, ge=1)
    history_resolution: Seconds = 5.0
    # Where the history is written: "process", a child process of the master (its work
    # then never holds the master's interpreter lock), or "thread", a thread of the master.
    history_writer: Literal["process", "thread"] = "process"
    # The bus (docs/SCALING.md): with a NATS URL ("nats://host:4222", several separated
    # by commas), the master also takes the heartbeats `cloudai gateway` processes publish
    # there, and answers the calls they forward. None: no bus, nothing changes.
    # Secure mode: a credential for NATS (bus_nkey, bus_creds, or user/token in the URL;
    # the other bus_* settings: cloudai.bus.settings).
    bus: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> MasterSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_cert is not None and self.insecure:
            raise ValueError("--tls-cert/--tls-key make no sense with --insecure")
        return self

    @property
    def tls_dir(self) -> Path:
        """Where the cluster CA and the master's certificate live."""
        return self.data_dir / "tls"

    @property
    def task_output_dir(self) -> Path:
        """Where the output workers stream is kept, per task and run."""
        return self.data_dir / "task-output"

    @property
    def admin_token_file(self) -> Path:
        """The bootstrap admin token, for the CLI on this machine (mode 0600)."""
        return self.data_dir / "admin.token"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value:  # a scheme the store does not support is one line at start, not later
            resolve_url(value, Path("."))
        return value

    @field_validator("bus")
    @classmethod
    def _check_bus(cls, value: str | None) -> str | None:
        if value:
            bus_servers(value)
        return value

    @field_validator("alert_webhooks")
    @classmethod
    def _check_webhooks(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"an alert webhook is an http:// or https:// URL, got {url!r}")
        return value

    @field_validator("allowed_workers")
    @classmethod
    def _check_allowed(cls, value: dict[str, str]) -> dict[str, str]:
        for worker_id, address in value.items():
            parse_allowed_worker(f"{worker_id}={address}" if address else worker_id)
        return value
