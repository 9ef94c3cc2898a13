"""The benchmark's settings: one run is fully described by a ``BenchConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("unary", "stream")
TARGETS = ("ours", "floor")  # a master of ours, or the do-nothing gRPC server
SERVERS = ("aio", "sync")  # the gRPC server kind of the master or the floor (--server)
DEFAULT_TICK_MS = 5.0  # our master's --ws-batch-ms default
MAX_TLS_WORKERS = 2000  # --tls: each worker joins (a key, a CSR, a certificate) first


@dataclass(slots=True)
class BenchConfig:
    mode: str = "unary"  # "unary": SendHeartbeat; "stream": StreamHeartbeats
    workers: int = 100
    rate: float = 1000.0  # heartbeats per second, all workers together
    clients: int = 0  # WebSocket clients that keep up
    tasks: int = 1  # running tasks per heartbeat
    duration: float = 10.0  # seconds of load
    generators: int = 2  # generator processes
    client_processes: int = 0  # 0: about one per 250 clients, at least 1, at most 4
    connections: int = 0  # gRPC connections in all; 0: one per worker (like real workers)
    track_clients: int = 10  # clients that check every tag (the others count entries)
    slow_clients: int = 0  # extra clients that stop reading
    # Clients spread over this many distinct subscriptions, each selecting every worker
    # (0: no subscription, today's stream).
    subscriptions: int = 0
    ws_deflate: bool = False  # clients negotiate permessage-deflate (aiohttp's client)
    slow_after: float = 2.0  # seconds after the start
    slow_for: float = 0.0  # seconds they read nothing
    drain: float = 2.0  # seconds after the load before results are read
    # Target: a fresh server per run (``target``), or an existing master (``grpc``).
    target: str = "ours"
    # The gRPC server kind of a fresh master or floor: "aio" (grpc.aio on uvloop) or
    # "sync" (grpc.server on a thread pool; unary only: no StreamHeartbeats). None: the
    # target's default (our master's --grpc-server default; the floor's aio).
    server: str | None = None
    # Unary only: every heartbeat on a new connection, closed after its answer (the Go
    # worker's pattern: it dials the master for each heartbeat).
    new_connection_per_heartbeat: bool = False
    grpc: str | None = None  # "host:port"
    ws_url: str | None = None  # ws://host:port[/ws/telemetry]
    master_pid: int | None = None
    worker_address: str = "127.0.0.1:9"  # worker_ip sent in RegisterWorker
    worker_prefix: str = "bench-"
    # Our own master's flags.
    ws_batch_ms: float | None = None
    inactivity_timeout: float | None = None
    master_args: list[str] = field(default_factory=list)
    # --tls: our master runs secure (its default: mutual TLS, HTTPS/WSS, API tokens), every
    # simulated worker joins and gets its own certificate and its own TLS connection.
    # Without it our master runs --insecure: the plaintext protocol.
    tls: bool = False
    label: str = ""

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError("rate and duration must be > 0")
        if self.clients < 0 or self.slow_clients < 0 or self.tasks < 0:
            raise ValueError("clients, slow clients and tasks must be >= 0")
        if self.slow_clients and self.slow_after + self.slow_for > self.duration + self.drain:
            raise ValueError("slow clients must resume before the drain ends")
        if self.subscriptions < 0:
            raise ValueError("subscriptions must be >= 0")
        if self.ws_deflate and self.slow_clients:
            raise ValueError("--ws-deflate clients cannot pause: no --slow-clients with it")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}")
        if self.server is not None and self.server not in SERVERS:
            raise ValueError(f"server must be one of {', '.join(SERVERS)}")
        if self.server is not None and self.grpc is not None:
            raise ValueError("--server picks a fresh master's or floor's server (not --grpc)")
        if self.server == "sync" and self.mode != "unary":
            raise ValueError("--server sync serves unary calls only (no StreamHeartbeats)")
        if self.new_connection_per_heartbeat and (self.mode != "unary" or self.tls):
            raise ValueError("--new-connection-per-heartbeat: unary mode, plaintext only")
        if self.target == "floor" and (self.clients + self.slow_clients or self.grpc):
            raise ValueError("the floor server has no WebSocket clients and is started fresh")
        if (self.grpc is None) != (self.ws_url is None) and self.clients + self.slow_clients:
            raise ValueError("--grpc and --ws-url go together")
        if self.tls:
            self._validate_tls()

    def _validate_tls(self) -> None:
        if self.target != "ours" or self.grpc is not None:
            raise ValueError("--tls runs a fresh secure master of ours (not the floor, no --grpc)")
        if self.connections not in (0, self.workers):
            raise ValueError(
                "--tls: a secure master binds each worker to its own certificate, so each "
                "simulated worker has its own connection (no --connections)"
            )
        if self.workers > MAX_TLS_WORKERS:
            raise ValueError(
                f"--tls: at most {MAX_TLS_WORKERS:,} workers (each joins the cluster first)"
            )

    @property
    def gen_count(self) -> int:
        return max(1, min(self.generators, self.workers))

    @property
    def client_process_count(self) -> int:
        total = self.clients + self.slow_clients
        if total == 0:
            return 0
        if self.client_processes:
            return min(self.client_processes, total)
        return max(1, min(4, (total + 249) // 250))

    @property
    def assumed_tick_ms(self) -> float:
        """The fan-out tick to assume when the master does not report its own: the
        ``--ws-batch-ms`` given, else our master's default (5 ms)."""
        return DEFAULT_TICK_MS if self.ws_batch_ms is None else self.ws_batch_ms


def batch_window(tick_ms: float) -> float:
    """Seconds within which the master may merge two heartbeats of one worker into one
    frame: its fan-out tick plus 1 ms of timer slack.

    The tick comes from the master at run time (``fanout_tick_ms`` of ``GET
    /api/status``, read by the coordinator once every client is connected and again at
    the end of the load, the longer kept): our master lengthens its configured tick with
    many clients, and only the master knows by how much. For a master that does not
    report it, the coordinator falls back to ``BenchConfig.assumed_tick_ms``: if such a
    master lengthens its tick, heartbeats it merged on purpose are counted as missed, so
    the assumption can only overstate what was missed, never hide it.
    """
    return max(0.0, tick_ms) / 1000.0 + 0.001
