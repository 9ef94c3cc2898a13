"""`cloudai master`: parse flags/env into MasterSettings and run a MasterServer."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cloudai.addresses import parse_port, split_host_port
from cloudai.master.gc_pacer import GcPacer
from cloudai.master.server import MasterServer
from cloudai.master.settings import MasterSettings
from cloudai.validation import InvalidMessage, check_id

log = logging.getLogger(__name__)


def _allow_worker(text: str) -> tuple[str, str]:
    worker_id, _, address = text.strip().partition("=")
    try:
        check_id("worker_id", worker_id)
        if address:
            split_host_port(address)
    except (ValueError, InvalidMessage) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return worker_id, address


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("master", help="run a master node")
    p.add_argument("--grpc-port", type=_port, help="gRPC port (env GRPC_PORT; default 50051)")
    p.add_argument("--http-port", type=_port, help="HTTP/WebSocket port (env HTTP_PORT; 8080)")
    p.add_argument("--host", help="listen address for gRPC and HTTP (default 0.0.0.0)")
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
    p.add_argument("--advertise-host", help="address workers use to reach this master")
    p.add_argument("--inactivity-timeout", type=float, help="seconds (default 30)")
    p.add_argument("--ws-batch-ms", type=float, help="fan-out tick in ms (default 5; 0: none)")
    p.add_argument(
        "--ws-max-frame-rate",
        type=_positive,
        metavar="N",
        help="frames/s to all clients together; with many clients the tick grows "
        "to stay under it (default 40000)",
    )
    p.add_argument("--ws-ping-interval", type=float, help="seconds (default 54)")
    p.add_argument("--ws-client-timeout", type=float, help="seconds (default 60)")
    p.add_argument("--ws-compression", action="store_true", help="offer permessage-deflate")
    p.add_argument(
        "--store-flush-interval",
        type=_positive,
        help="seconds between writes of heartbeat times to the database (default 5)",
    )
    p.add_argument(
        "--gc-young-ms",
        type=float,
        metavar="MS",
        help="the GC pacer's young-generation interval (default 100; 0: CPython's own GC)",
    )
    p.add_argument("--data-dir", type=Path, help="directory of the embedded database")
    p.add_argument("--database-url", help="e.g. postgresql://... (env CLOUDAI_DATABASE_URL)")
    p.add_argument("--no-cli", action="store_true", help="no interactive CLI even on a terminal")
    p.add_argument("--ready-file", type=Path, help="write {grpc_port, http_port, pid} here")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> MasterSettings:
    settings = MasterSettings.from_env()
    if args.grpc_port is not None:
        settings.grpc_port = args.grpc_port
    if args.http_port is not None:
        settings.http_port = args.http_port
    if args.host:
        settings.grpc_host = settings.http_host = args.host
    if args.no_http:
        settings.http_enabled = False
    settings.allowed_workers.update(dict(args.allow_worker))
    if args.allow_workers_file is not None:
        for line in args.allow_workers_file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    worker_id, address = _allow_worker(line)
                except argparse.ArgumentTypeError as exc:
                    raise SystemExit(f"{args.allow_workers_file}: {exc}") from None
                settings.allowed_workers[worker_id] = address
    if args.advertise_host:
        settings.advertise_host = args.advertise_host
    if args.inactivity_timeout is not None:
        settings.inactivity_timeout = args.inactivity_timeout
    if args.ws_batch_ms is not None:
        settings.ws_batch_interval = args.ws_batch_ms / 1000.0
    if args.ws_ping_interval is not None:
        settings.ws_ping_interval = args.ws_ping_interval
    if args.ws_client_timeout is not None:
        settings.ws_client_timeout = args.ws_client_timeout
    if args.ws_compression:
        settings.ws_compression = True
    if args.ws_max_frame_rate is not None:
        settings.ws_max_frame_rate = args.ws_max_frame_rate
    if args.gc_young_ms is not None:
        settings.gc_young_interval = max(0.0, args.gc_young_ms) / 1000.0
    if args.store_flush_interval is not None:
        settings.store_flush_interval = args.store_flush_interval
    if args.data_dir is not None:
        settings.data_dir = args.data_dir
    if args.database_url:
        settings.database_url = args.database_url
    if args.no_cli:
        settings.interactive = False
    elif settings.interactive is None:
        settings.interactive = sys.stdin.isatty()
    return settings


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    install_event_loop_policy()
    sys.setswitchinterval(settings.gil_switch_interval)

    async def main() -> None:
        server = MasterServer(settings)
        if settings.gc_young_interval > 0:
            pacer = GcPacer(
                settings.gc_young_interval,
                settings.gc_full_interval,
                settings.gc_refresh_interval,
            )

            async def start_pacer() -> None:
                pacer.start()

            server.after_start.append(start_pacer)
            server.before_stop.append(pacer.stop)
        foreground = None
        if settings.interactive:
            from cloudai.master.console import make_console

            foreground = make_console(server)
        await server.run(ready_file=args.ready_file, foreground=foreground)

    try:
        asyncio.run(main())
    except OSError as exc:
        log.error("cannot start the master: %s", exc)
        return 1
    return 0
