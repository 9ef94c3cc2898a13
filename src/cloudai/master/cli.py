"""`cloudai master`: flags -> MasterSettings -> run_master().

Flags are optional overrides: a flag not given leaves the setting to the environment
(``CLOUDAI_*``), the config file or the default (see ``cloudai.settings``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cloudai.addresses import parse_port
from cloudai.bus.settings import add_bus_credential_arguments, bus_credential_flags
from cloudai.master.settings import MasterSettings, parse_allowed_worker
from cloudai.settings import SettingsError

SUMMARY = "run a master node"
DESCRIPTION = "Run a master node: gRPC for workers, HTTP/WebSocket for dashboards and the API."


def _allow_worker(text: str) -> tuple[str, str]:
    try:
        return parse_allowed_worker(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _default(name: str) -> Any:
    return MasterSettings.default(name)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("master", help=SUMMARY, description=DESCRIPTION)
    add_master_arguments(p)
    p.set_defaults(func=run)


def add_master_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grpc-port",
        type=_port,
        help=f"gRPC port (env CLOUDAI_GRPC_PORT or GRPC_PORT; default {_default('grpc_port')})",
    )
    p.add_argument(
        "--http-port",
        type=_port,
        help="HTTP/WebSocket port (env CLOUDAI_HTTP_PORT or HTTP_PORT; "
        f"default {_default('http_port')})",
    )
    p.add_argument(
        "--host", help=f"listen address for gRPC and HTTP (default {_default('grpc_host')})"
    )
    p.add_argument("--no-http", action="store_true", help="do not start the HTTP server")
    p.add_argument(
        "--allow-worker",
        type=_allow_worker,
        action="append",
        default=[],
        metavar="ID[=IP:PORT]",
        help="authorise a worker; with its address the master calls its MasterRegister, "
        "without it the worker must register itself (--master); repeatable",
    )
    p.add_argument(
        "--allow-workers-file",
        type=Path,
        metavar="FILE",
        help="authorise the workers listed in FILE, one ID[=IP:PORT] a line",
    )
    p.add_argument(
        "--advertise-host",
        help="address workers use to reach this master (default: the local address "
        "that routes to each worker)",
    )
    p.add_argument(
        "--inactivity-timeout",
        type=float,
        metavar="SECONDS",
        help=f"a worker is inactive after this long without a heartbeat "
        f"(default {_default('inactivity_timeout'):g})",
    )
    p.add_argument(
        "--ws-batch-ms",
        type=float,
        metavar="MS",
        help=f"fan-out tick (default {_default('ws_batch_interval') * 1000:g}; 0: none)",
    )
    p.add_argument(
        "--ws-max-frame-rate",
        type=float,
        metavar="N",
        help="frames/s to all clients together; with many clients the tick grows "
        f"to stay under it (default {_default('ws_max_frame_rate'):g})",
    )
    p.add_argument(
        "--ws-ping-interval",
        type=float,
        metavar="SECONDS",
        help=f"default {_default('ws_ping_interval'):g}",
    )
    p.add_argument(
        "--ws-client-timeout",
        type=float,
        metavar="SECONDS",
        help=f"drop a silent client after this long (default {_default('ws_client_timeout'):g})",
    )
    p.add_argument(
        "--ws-compression", action="store_true", default=None, help="offer permessage-deflate"
    )
    p.add_argument(
        "--store-flush-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between writes of heartbeat times to the database "
        f"(default {_default('store_flush_interval'):g})",
    )
    p.add_argument(
        "--gc-young-ms",
        type=float,
        metavar="MS",
        help="the GC pacer's young-generation interval "
        f"(default {_default('gc_young_interval') * 1000:g}; 0: CPython's own GC)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"directory of the embedded database (env CLOUDAI_DATA_DIR; "
        f"default {_default('data_dir')})",
    )
    p.add_argument(
        "--database-url", help="e.g. postgresql://user@host/db (env CLOUDAI_DATABASE_URL)"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="speak the plaintext protocol of the Go implementation (no TLS, no tokens); "
        "for Go workers and tools only",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="HTTPS certificate to serve")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    p.add_argument(
        "--no-cli", action="store_true", help="no interactive console even on a terminal"
    )
    p.add_argument(
        "--alert-rules",
        type=Path,
        metavar="FILE",
        help="alert rules (TOML, docs/ALERTS.md); SIGHUP reloads it",
    )
    p.add_argument(
        "--alert-webhook",
        action="append",
        default=[],
        metavar="URL",
        help="send alerts here, as Alertmanager's POST /api/v2/alerts takes them; repeatable",
    )
    p.add_argument(
        "--alert-interval",
        type=float,
        metavar="SECONDS",
        help="how often alert rules' durations are judged "
        f"(default {_default('alert_evaluation_interval'):g})",
    )
    p.add_argument(
        "--task-output-max-mib",
        type=float,
        metavar="MIB",
        help="keep the first MIB MiB of each task run's output streamed by workers "
        f"(default {_default('task_output_max_bytes') / 2**20:g}; 0: keep none)",
    )
    p.add_argument(
        "--task-output-days",
        type=float,
        metavar="DAYS",
        help="delete a task's streamed output this many days after it finished "
        f"(default {_default('task_output_retention') / 86_400:g}; 0: keep it for ever)",
    )
    p.add_argument(
        "--no-history",
        action="store_true",
        help="keep no telemetry history (docs/HISTORY.md; retention: history_* settings)",
    )
    p.add_argument(
        "--bus",
        metavar="URL",
        help="also take heartbeats and calls from `cloudai gateway` processes through this "
        "NATS server (nats://HOST:4222; docs/SCALING.md); default: none",
    )
    add_bus_credential_arguments(p)
    p.add_argument(
        "--grpc-server",
        choices=("aio", "sync"),
        help="the gRPC server kind: aio (asyncio; serves streams) or sync (threads; unary "
        "only, our workers fall back to unary; docs/PERFORMANCE.md) "
        f"(default {_default('grpc_server')})",
    )
    p.add_argument("--ready-file", type=Path, help="write {grpc_port, http_port, pid} here")


def allowed_workers(args: argparse.Namespace) -> dict[str, str] | None:
    workers = dict(args.allow_worker)
    if args.allow_workers_file is not None:
        try:
            lines = args.allow_workers_file.read_text().splitlines()
        except OSError as exc:
            raise SettingsError(f"cannot read {args.allow_workers_file}: {exc.strerror}") from None
        for line in lines:
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    worker_id, address = parse_allowed_worker(line)
                except ValueError as exc:
                    raise SettingsError(f"{args.allow_workers_file}: {exc}") from None
                workers[worker_id] = address
    return workers or None


def _mib_to_bytes(mib: float | None) -> int | None:
    return None if mib is None else int(mib * 2**20)


def _days_to_seconds(days: float | None) -> float | None:
    return None if days is None else days * 86_400.0


def master_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give (None: not given)."""
    host = args.host
    return {
        "grpc_port": args.grpc_port,
        "http_port": args.http_port,
        "grpc_host": host,
        "http_host": host,
        "http_enabled": False if args.no_http else None,
        "allowed_workers": allowed_workers(args),
        "advertise_host": args.advertise_host,
        "inactivity_timeout": args.inactivity_timeout,
        "ws_batch_interval": None if args.ws_batch_ms is None else args.ws_batch_ms / 1000.0,
        "ws_max_frame_rate": args.ws_max_frame_rate,
        "ws_ping_interval": args.ws_ping_interval,
        "ws_client_timeout": args.ws_client_timeout,
        "ws_compression": args.ws_compression,
        "store_flush_interval": args.store_flush_interval,
        "gc_young_interval": None if args.gc_young_ms is None else args.gc_young_ms / 1000.0,
        "data_dir": args.data_dir,
        "database_url": args.database_url,
        "interactive": False if args.no_cli else None,
        "insecure": args.insecure,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "alert_rules": getattr(args, "alert_rules", None),
        "alert_webhooks": getattr(args, "alert_webhook", None) or None,
        "alert_evaluation_interval": getattr(args, "alert_interval", None),
        "history_enabled": False if getattr(args, "no_history", False) else None,
        "task_output_max_bytes": _mib_to_bytes(getattr(args, "task_output_max_mib", None)),
        "task_output_retention": _days_to_seconds(getattr(args, "task_output_days", None)),
        "bus": getattr(args, "bus", None),
        **bus_credential_flags(args),
        "grpc_server": getattr(args, "grpc_server", None),
    }


def settings_from_args(args: argparse.Namespace) -> MasterSettings:
    settings: MasterSettings = MasterSettings.load(**master_flags(args))
    return settings


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"cloudai master: {exc}", file=sys.stderr)
        return 2
    from cloudai.master.run import run_master

    return run_master(settings, ready_file=args.ready_file)
