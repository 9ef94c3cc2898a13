"""`cloudai up`: a working local cluster in one command.

Runs a master in this process (embedded SQLite store, interactive console when on a
terminal) and N local worker processes that are authorised up front and register
themselves. Ctrl-C (or `exit` in the console) stops the workers, then the master.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from cloudai.master.cli import install_event_loop_policy
from cloudai.master.server import MasterServer
from cloudai.master.settings import MasterSettings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="start a local cluster: a master and N workers")
    p.add_argument("--workers", type=int, default=3, help="local workers to start (default 3)")
    p.add_argument("--grpc-port", type=int, default=50051)
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--data-dir", type=Path, help="master data directory (SQLite store)")
    p.add_argument("--interval", type=float, default=5.0, help="worker heartbeat interval (s)")
    p.add_argument("--no-cli", action="store_true", help="no interactive console")
    p.set_defaults(func=run)


def worker_ids(count: int) -> list[str]:
    return [f"local-{i + 1}" for i in range(count)]


def worker_command(worker_id: str, grpc_port: int, work_dir: Path, interval: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cloudai",
        "worker",
        "--id",
        worker_id,
        "--host",
        "127.0.0.1",
        "--master",
        f"127.0.0.1:{grpc_port}",
        "--work-dir",
        str(work_dir / worker_id),
        "--interval",
        str(interval),
    ]


def banner(grpc_port: int, http_port: int, ids: list[str]) -> str:
    return "\n".join(
        [
            "",
            f"CloudAI local cluster: master gRPC 127.0.0.1:{grpc_port}, "
            f"HTTP 127.0.0.1:{http_port}, workers: {', '.join(ids) or 'none'}",
            f"  watch live:   cloudai top --url ws://127.0.0.1:{http_port}",
            f"  stream:       ws://127.0.0.1:{http_port}/ws/telemetry",
            f"  health:       curl http://127.0.0.1:{http_port}/health",
            f"  run a task:   cloudai submit {ids[0] if ids else 'WORKER'} --cmd 'echo hello'",
            "  stop:         Ctrl-C (or `exit` in the console)",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    settings = MasterSettings.from_env()
    settings.grpc_port = args.grpc_port
    settings.http_port = args.http_port
    settings.grpc_host = settings.http_host = "127.0.0.1"
    if args.data_dir is not None:
        settings.data_dir = args.data_dir
    ids = worker_ids(args.workers)
    settings.allowed_workers.update({worker_id: "" for worker_id in ids})
    settings.interactive = not args.no_cli and sys.stdin.isatty()
    install_event_loop_policy()
    return asyncio.run(_up(settings, ids, args.interval))


async def _up(settings: MasterSettings, ids: list[str], interval: float) -> int:
    server = MasterServer(settings)
    workers: list[subprocess.Popen[bytes]] = []
    work_root = settings.data_dir / "workers"
    work_root.mkdir(parents=True, exist_ok=True)

    async def start_workers() -> None:
        assert server.grpc_port is not None
        for worker_id in ids:
            command = worker_command(worker_id, server.grpc_port, work_root, interval)
            workers.append(spawn(command, work_root / f"{worker_id}.log"))
        print(banner(server.grpc_port, server.http_port or 0, ids), flush=True)

    foreground = None
    if settings.interactive:
        from cloudai.master.console import make_console

        foreground = make_console(server)

    async def stop_local_workers() -> None:
        # Workers first, while the master still runs: they deliver pending results.
        await asyncio.to_thread(stop_workers, workers)

    server.after_start.append(start_workers)
    server.before_stop.append(stop_local_workers)
    try:
        await server.run(foreground=foreground)
    except OSError as exc:
        log.error("cannot start the master: %s", exc)
        return 1
    finally:
        await asyncio.to_thread(stop_workers, workers)  # no-op unless start-up failed
    return 0


def spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the workers in order
        )


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for proc in workers:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
