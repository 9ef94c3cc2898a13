"""`cloudai up`: a working local cluster in one command.

Runs a master in this process (embedded SQLite store, interactive console when on a
terminal) and N local worker processes that are authorised up front and register
themselves. The master listens on loopback unless told ``--host``, and tells workers an
address it listens on. Ctrl-C (on an empty console prompt), `exit` or Ctrl-D stops the
workers, then the master.
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

from cloudai.addresses import is_wildcard
from cloudai.master.run import run_master
from cloudai.master.server import MasterServer
from cloudai.master.settings import MasterSettings
from cloudai.settings import SettingsError

log = logging.getLogger(__name__)

SUMMARY = "start a local cluster: a master and N workers"
DESCRIPTION = "Start a local cluster: a master and N workers on this machine, in one command."
LOCAL_HOST = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("up", help=SUMMARY, description=DESCRIPTION)
    p.add_argument("--workers", type=int, default=3, help="local workers to start (default 3)")
    p.add_argument("--grpc-port", type=int, help="master gRPC port (default 50051)")
    p.add_argument("--http-port", type=int, help="master HTTP/WebSocket port (default 8080)")
    p.add_argument(
        "--host",
        default=LOCAL_HOST,
        help=f"the master's listen address (default {LOCAL_HOST}; 0.0.0.0 to let workers "
        "on other machines join too)",
    )
    p.add_argument(
        "--advertise-host",
        help="the address workers are told to reach the master at (default: --host, or "
        "the address that routes to each worker when --host is a wildcard)",
    )
    p.add_argument("--data-dir", type=Path, help="master data directory (SQLite store)")
    p.add_argument("--interval", type=float, default=5.0, help="worker heartbeat interval (s)")
    p.add_argument("--no-cli", action="store_true", help="no interactive console")
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext everywhere, no certificates or tokens (the Go protocol)",
    )
    p.set_defaults(func=run)


def worker_ids(count: int) -> list[str]:
    return [f"local-{i + 1}" for i in range(count)]


def worker_command(worker_id: str, master: str, work_dir: Path, interval: float) -> list[str]:
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
        master,
        "--work-dir",
        str(work_dir / worker_id),
        "--interval",
        str(interval),
    ]


def banner(
    host: str,
    grpc_port: int,
    http_port: int,
    ids: list[str],
    console: bool,
    scheme: str = "https",
    ca_file: Path | None = None,
) -> str:
    shown = LOCAL_HOST if is_wildcard(host) else host
    ws = "wss" if scheme == "https" else "ws"
    stop = "Ctrl-C on an empty prompt, `exit` or Ctrl-D" if console else "Ctrl-C"
    return "\n".join(
        [
            "",
            f"CloudAI local cluster: master gRPC {shown}:{grpc_port}, "
            f"HTTP {shown}:{http_port}, workers: {', '.join(ids) or 'none'}",
            f"  dashboard:    {scheme}://{shown}:{http_port}/"
            + (f" (API token: {ca_file.parent.parent / 'admin.token'})" if ca_file else ""),
            f"  watch live:   cloudai top --url {scheme}://{shown}:{http_port}",
            f"  stream:       {ws}://{shown}:{http_port}/ws/telemetry",
            f"  health:       curl {f'--cacert {ca_file} ' if ca_file else ''}"
            f"{scheme}://{shown}:{http_port}/health",
            f"  run a task:   cloudai submit {ids[0] if ids else 'WORKER'} --cmd 'echo hello'",
            f"  stop:         {stop} (stops the workers, then the master)",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    ids = worker_ids(args.workers)
    try:
        settings: MasterSettings = MasterSettings.load(
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            grpc_host=args.host,
            http_host=args.host,
            advertise_host=args.advertise_host,
            data_dir=args.data_dir,
            allowed_workers={worker_id: "" for worker_id in ids},
            interactive=False if args.no_cli else None,
            insecure=args.insecure,
        )
    except SettingsError as exc:
        print(f"cloudai up: {exc}", file=sys.stderr)
        return 2
    interactive = settings.interactive if settings.interactive is not None else sys.stdin.isatty()
    workers: list[subprocess.Popen[bytes]] = []
    work_root = settings.data_dir / "workers"
    work_root.mkdir(parents=True, exist_ok=True)
    connect_host = LOCAL_HOST if is_wildcard(settings.grpc_host) else settings.grpc_host

    async def start_workers(server: MasterServer) -> None:
        assert server.grpc_port is not None
        master = f"{connect_host}:{server.grpc_port}"
        access = server.parts.access
        for worker_id in ids:
            command = worker_command(worker_id, master, work_root, args.interval)
            env = dict(os.environ)
            if access is None:
                command.append("--insecure")
            else:  # one use, for this worker id; a worker that joined before keeps its cert
                _info, token = await access.create_join_token(
                    ttl=600.0, uses=1, worker_id=worker_id, description="cloudai up"
                )
                env["CLOUDAI_JOIN_TOKEN"] = token  # not on the command line, where ps shows it
            workers.append(spawn(command, work_root / f"{worker_id}.log", env))
        scheme = "http" if settings.insecure else "https"
        ca_file = None if settings.insecure else settings.tls_dir / "ca.pem"
        text = banner(
            settings.http_host,
            server.grpc_port,
            server.http_port or 0,
            ids,
            interactive,
            scheme,
            ca_file,
        )
        print(text, flush=True)

    async def stop_local_workers(server: MasterServer) -> None:
        # Workers first, while the master still runs: they deliver pending results.
        await asyncio.to_thread(stop_workers, workers)

    try:
        return run_master(settings, on_started=start_workers, before_stop=stop_local_workers)
    finally:
        stop_workers(workers)  # no-op unless start-up failed


def spawn(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            env=env,
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
