"""The master's one typed settings object. Flows one way: settings -> server -> handlers."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cloudai.addresses import parse_port
from cloudai.validation import MAX_MESSAGE_BYTES


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "cloudai"


@dataclass(slots=True)
class MasterSettings:
    master_id: str = field(default_factory=socket.gethostname)
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    http_enabled: bool = True
    # Address given to workers in MasterRegister; None: the local address routing to each.
    advertise_host: str | None = None
    inactivity_timeout: float = 30.0
    heartbeat_queue_size: int = 8
    max_message_bytes: int = MAX_MESSAGE_BYTES
    ws_ping_interval: float = 54.0
    ws_client_timeout: float = 60.0
    ws_batch_interval: float = 0.005
    ws_max_frame_rate: float = 40_000.0  # all clients together; longer ticks beyond
    ws_compression: bool = False
    shutdown_grace: float = 3.0
    # Heartbeat times reach the store at most this late (the live state is in memory;
    # the stored time serves restarts and history). One batch per interval.
    store_flush_interval: float = 5.0
    # Process tuning, applied by the ``cloudai master`` command (it owns the process):
    # a short GIL switch interval bounds how long the event loop waits on a thread
    # (the store's writer) to ~0.5 ms instead of 5 ms; the GC pacer runs the garbage
    # collector in small steps on a timer (see master/gc_pacer.py), 0 turns it off.
    gil_switch_interval: float = 0.0005
    gc_young_interval: float = 0.1
    gc_full_interval: float = 300.0
    gc_refresh_interval: float = 3600.0
    allowed_workers: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    admin_token: str | None = None
    interactive: bool | None = None  # None: when stdin is a terminal

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> MasterSettings:
        env = dict(os.environ if env is None else env)
        settings = cls()
        if "GRPC_PORT" in env:
            settings.grpc_port = parse_port(env["GRPC_PORT"])
        if "HTTP_PORT" in env:
            settings.http_port = parse_port(env["HTTP_PORT"])
        if env.get("CLOUDAI_DATABASE_URL"):
            settings.database_url = env["CLOUDAI_DATABASE_URL"]
        if env.get("CLOUDAI_ADMIN_TOKEN"):
            settings.admin_token = env["CLOUDAI_ADMIN_TOKEN"]
        if env.get("CLOUDAI_DATA_DIR"):
            settings.data_dir = Path(env["CLOUDAI_DATA_DIR"])
        return settings
