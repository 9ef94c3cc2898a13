"""`cloudai worker`: parse flags into WorkerSettings and run a WorkerNode."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cloudai.addresses import parse_port, split_host_port
from cloudai.loop import event_loop_factory
from cloudai.validation import InvalidMessage, check_id
from cloudai.worker.node import WorkerNode, WorkerStartError
from cloudai.worker.settings import DEFAULT_WORKER_PORT, MIB, WorkerSettings

log = logging.getLogger(__name__)


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _address(text: str) -> str:
    try:
        split_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _worker_id(text: str) -> str:
    try:
        return check_id("worker id", text)
    except InvalidMessage as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 seconds")
    return value


def _default(name: str) -> object:
    return WorkerSettings.default(name)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a worker node that joins a master",
        description="Run a worker. It joins a master either when the master calls it"
        " (the admin runs the printed 'register' line on the master) or, with --master,"
        " by registering itself.",
    )
    p.add_argument("--id", type=_worker_id, help="worker id (default: the hostname)")
    p.add_argument(
        "--port",
        type=_port,
        help=f"gRPC port, or the first to try ('50052' or ':50052'; default {DEFAULT_WORKER_PORT};"
        " 0: any free port)",
    )
    p.add_argument(
        "--host",
        help="listen address (default 0.0.0.0; with --insecure 127.0.0.1, so that a "
        "plaintext worker is reachable from other machines only when told so)",
    )
    p.add_argument(
        "--join",
        metavar="TOKEN",
        help="join the cluster with a token from 'cloudai token create' (env "
        "CLOUDAI_JOIN_TOKEN); needed once, the certificate is kept in the work dir",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="speak the plaintext protocol of the Go implementation (no TLS): for a Go master only",
    )
    p.add_argument(
        "--master", type=_address, metavar="HOST:PORT", help="register with this master ourselves"
    )
    p.add_argument(
        "--advertise-host", help="address the master uses to reach us (default: detected)"
    )
    p.add_argument(
        "--interval",
        type=float,
        help=f"heartbeat interval, s (default {_default('heartbeat_interval'):g})",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        help="task directories and undelivered results (default"
        " ~/.local/share/cloudai/worker/<id>)",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        help="on SIGTERM: wait this long for running tasks, then cancel them "
        f"(default {_default('drain_timeout'):g})",
    )
    p.add_argument(
        "--kill-grace",
        type=_seconds,
        help="cancelling a task: SIGKILL this long after SIGTERM "
        f"(default {_default('kill_grace'):g})",
    )
    p.add_argument("--no-docker", action="store_true", help="refuse tasks with a docker_image")
    p.add_argument(
        "--task-limits",
        choices=("auto", "accounted"),
        help="hold process tasks to their req_cpu/req_memory with the kernel's cgroups when"
        " possible (auto, the default), or only account for them (env CLOUDAI_TASK_LIMITS)",
    )
    p.add_argument(
        "--task-output-max-mib",
        type=float,
        metavar="MIB",
        help="stream each task run's output to the master live, keeping up to MIB MiB of "
        "it on disk until the master has it (default 64; 0: do not stream)",
    )
    p.add_argument("--ready-file", type=Path, help="write {worker_id, address, port, pid} here")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    """Flags over env over the config file over defaults; SettingsError when invalid."""
    settings: WorkerSettings = WorkerSettings.load(
        worker_id=args.id or None,
        port=args.port,
        host=args.host,
        join_token=args.join,
        insecure=args.insecure,
        master_address=args.master,
        advertise_host=args.advertise_host,
        heartbeat_interval=args.interval,
        work_dir=args.work_dir,
        drain_timeout=args.drain_timeout,
        kill_grace=args.kill_grace,
        docker_enabled=False if args.no_docker else None,
        task_limits=args.task_limits,
        task_output_max_bytes=None
        if getattr(args, "task_output_max_mib", None) is None
        else int(args.task_output_max_mib * MIB),
    )
    return settings


def announce(node: WorkerNode) -> None:
    """What the existing worker prints: its id, its address and the master's line."""
    print(f"Worker ID: {node.worker_id}")
    print(f"Worker address: {node.address}")
    if not node.settings.insecure:
        print(f"Joined; registering with master {node.settings.master_address}", flush=True)
        return
    if node.settings.master_address:
        print(
            f"Registering with master {node.settings.master_address}; if it is not authorised"
            " yet, run on the master:"
        )
    else:
        print("Waiting for a master. To register this worker, run on the master:")
    print(f"  {node.registration_line()}", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        node = WorkerNode(settings)
    except ValueError as exc:
        print(f"cloudai worker: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(node.run(ready_file=args.ready_file, on_started=announce))
    except WorkerStartError as exc:
        print(f"cloudai worker: {exc}", file=sys.stderr)
        return 1
    return 0
