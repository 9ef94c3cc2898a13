"""`cloudai bench`: load a master with simulated workers and dashboards, measure it.

One JSON line per run on stdout, then a table. By default each run gets a fresh master
of our own, plaintext (``--insecure``), with the simulated workers authorised
(``--allow-workers-file``); ``--tls`` runs it secure instead (each simulated worker joins
and presents its own certificate over its own TLS connection; WSS with a token); ``--grpc``,
``--ws-url`` and ``--master-pid`` aim at any master that speaks the protocol, and
``--print-register`` prints the admin's ``register`` lines for masters that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import orjson

from cloudai.bench.config import MODES, SERVERS, TARGETS, BenchConfig
from cloudai.bench.schedule import worker_ids


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, comma-separated")
    return rates


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}")
    return modes


def _choices(allowed: tuple[str, ...], what: str) -> Any:
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        if not values or any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"{what} are {', '.join(allowed)}, comma-separated")
        return values

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="load-test a master (simulated workers and WebSocket clients)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load = p.add_argument_group("load")
    load.add_argument("--mode", type=_modes, default=["unary"], help="unary, stream or both")
    load.add_argument("--workers", type=int, default=100, help="simulated workers (100)")
    load.add_argument("--rate", type=float, default=1000.0, help="heartbeats/s in all (1000)")
    load.add_argument("--rates", type=_rates, help="a sweep, e.g. 1000,5000,10000")
    load.add_argument("--clients", type=int, default=0, help="WebSocket clients (0)")
    load.add_argument("--tasks", type=int, default=1, help="running tasks per heartbeat (1)")
    load.add_argument("--duration", type=float, default=10.0, help="seconds of load (10)")
    load.add_argument("--repeat", type=int, default=1, help="runs per point (1)")
    load.add_argument("--slow-clients", type=int, default=0, help="extra clients that pause")
    load.add_argument("--slow-after", type=float, default=2.0, help="pause start, s (2)")
    load.add_argument("--slow-for", type=float, default=0.0, help="pause length, s (0)")
    load.add_argument("--drain", type=float, default=2.0, help="s after the load (2)")
    load.add_argument(
        "--new-connection-per-heartbeat",
        action="store_true",
        help="unary: each heartbeat on a new connection, closed after the answer (the Go "
        "worker's pattern)",
    )
    load.add_argument(
        "--subscriptions",
        type=int,
        default=0,
        help="spread the clients over N distinct subscriptions, each of every worker (0: none)",
    )
    load.add_argument(
        "--ws-deflate",
        action="store_true",
        help="clients negotiate permessage-deflate (aiohttp's client; our master gets "
        "--ws-compression)",
    )
    procs = p.add_argument_group("bench processes")
    procs.add_argument("--generators", type=int, default=2, help="generator processes (2)")
    procs.add_argument("--client-processes", type=int, default=0, help="0: by client count")
    procs.add_argument("--connections", type=int, default=0, help="gRPC connections; 0: 1/worker")
    procs.add_argument("--track-clients", type=int, default=10, help="clients checking tags (10)")
    target = p.add_argument_group("target")
    target.add_argument(
        "--target",
        type=_choices(TARGETS, "targets"),
        default=["ours"],
        help="ours: a fresh master of ours per run (default); floor: a fresh gRPC server "
        "that speaks the protocol and does nothing, to measure what grpcio itself costs; "
        "ours,floor: both, run by turns",
    )
    target.add_argument(
        "--server",
        type=_choices(SERVERS, "server kinds"),
        help="the gRPC server kind of the fresh master or floor: aio (grpc.aio), sync "
        "(grpc.server on a thread pool; unary only), or aio,sync: both, by turns "
        "(default: the master's own default, --grpc-server)",
    )
    target.add_argument("--grpc", metavar="HOST:PORT", help="an existing master's gRPC address")
    target.add_argument("--ws-url", metavar="URL", help="its ws://HOST:PORT/ws/telemetry")
    target.add_argument("--master-pid", type=int, help="its pid, for CPU and RSS")
    target.add_argument("--worker-address", default="127.0.0.1:9", help="worker_ip to send")
    target.add_argument("--worker-prefix", default="bench-", help="worker id prefix (bench-)")
    target.add_argument(
        "--agent-seconds",
        type=float,
        metavar="S",
        help="instead of a load test: measure one real worker agent (CPU, RSS) over S s",
    )
    target.add_argument(
        "--print-register",
        action="store_true",
        help="print `register <id> <ip:port>` for every simulated worker and exit",
    )
    own = p.add_argument_group("own master")
    own.add_argument(
        "--ws-batch-ms",
        type=float,
        help="its fan-out tick (its default: 5); with --grpc, the tick assumed when the "
        "master's /api/status does not report fanout_tick_ms",
    )
    own.add_argument("--inactivity-timeout", type=float, help="seconds (its default: 30)")
    own.add_argument("--master-arg", action="append", default=[], help="extra flag, repeatable")
    own.add_argument(
        "--tls",
        action="store_true",
        help="run it secure (mutual TLS, HTTPS/WSS, API tokens): every simulated worker "
        "joins first and gets its own certificate and TLS connection; without it the "
        "master runs --insecure (plaintext)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json-out", type=Path, help="also append the JSON lines to FILE")
    out.add_argument("--plot", type=Path, metavar="FILE.png", help="latency vs offered load")
    out.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="RUNS.jsonl",
        help="no run: print the table of, and --plot, records saved with --json-out",
    )
    out.add_argument(
        "--targets",
        type=Path,
        metavar="FILE.png",
        help="with --replot: judge the runs against the project's performance targets, "
        "print and draw it",
    )
    out.add_argument("--label", default="", help="a label stored in each record")
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def configs_from_args(args: argparse.Namespace) -> list[BenchConfig]:
    base = BenchConfig(
        workers=args.workers,
        clients=args.clients,
        tasks=args.tasks,
        duration=args.duration,
        generators=args.generators,
        client_processes=args.client_processes,
        connections=args.connections,
        track_clients=args.track_clients,
        slow_clients=args.slow_clients,
        slow_after=args.slow_after,
        slow_for=args.slow_for,
        drain=args.drain,
        subscriptions=args.subscriptions,
        ws_deflate=args.ws_deflate,
        new_connection_per_heartbeat=args.new_connection_per_heartbeat,
        grpc=args.grpc,
        ws_url=args.ws_url,
        master_pid=args.master_pid,
        worker_address=args.worker_address,
        worker_prefix=args.worker_prefix,
        ws_batch_ms=args.ws_batch_ms,
        inactivity_timeout=args.inactivity_timeout,
        master_args=list(args.master_arg),
        tls=args.tls,
        label=args.label,
    )
    # Targets and server kinds run by turns within each repeat, so that what is compared
    # ran in the same minutes of a shared machine.
    configs = []
    for mode in args.mode:
        for rate in args.rates or [args.rate]:
            for _ in range(max(1, args.repeat)):
                for target_kind in args.target:
                    for server in args.server or [None]:
                        if server == "sync" and mode != "unary" and len(args.server) > 1:
                            continue  # a sync server serves unary calls only
                        config = dataclasses.replace(
                            base, mode=mode, rate=rate, target=target_kind, server=server
                        )
                        if target_kind == "floor" and len(args.target) > 1:
                            config.clients = config.slow_clients = 0  # it has no WebSocket
                        config.master_args = list(base.master_args)
                        config.validate()
                        configs.append(config)
    return configs


def register_lines(workers: int, prefix: str, address: str) -> list[str]:
    return [f"register {worker_id} {address}" for worker_id in worker_ids(workers, prefix)]


def run(args: argparse.Namespace) -> int:
    from cloudai.bench.report import table
    from cloudai.bench.runner import BenchError, run_once

    if args.print_register:
        print("\n".join(register_lines(args.workers, args.worker_prefix, args.worker_address)))
        return 0
    if args.replot:
        saved = [
            orjson.loads(line)
            for path in args.replot
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        runs = [r for r in saved if "offered_rate" in r]
        print(table(runs))
        if args.plot is not None:
            from cloudai.bench.plot import plot_sweep

            plot_sweep(runs, args.plot, args.label)
        if args.targets is not None:
            from cloudai.bench import targets

            verdicts = targets.judge(saved)
            print()
            print(targets.table(verdicts))
            targets.plot_targets(verdicts, args.targets)
        return 0
    if args.agent_seconds:
        from cloudai.bench.agent import measure_agent

        result = measure_agent(args.agent_seconds)
        line = orjson.dumps(result).decode()
        print(line, flush=True)
        if args.json_out is not None:
            with open(args.json_out, "a") as out:
                out.write(line + "\n")
        return 0
    try:
        configs = configs_from_args(args)
    except ValueError as exc:
        print(f"cloudai bench: {exc}", file=sys.stderr)
        return 2

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    records: list[dict[str, Any]] = []
    failed = False
    for i, config in enumerate(configs, 1):
        progress(f"run {i}/{len(configs)}: {config.mode}, {config.rate:g}/s")
        try:
            record = run_once(config, progress)
        except (BenchError, OSError, RuntimeError) as exc:
            print(f"cloudai bench: run {i} failed: {exc}", file=sys.stderr)
            failed = True
            continue
        records.append(record)
        line = orjson.dumps(record).decode()
        print(line, flush=True)
        if args.json_out is not None:
            with open(args.json_out, "a") as out:
                out.write(line + "\n")
    if records:
        print()
        print(table(records))
    if args.plot is not None and records:
        from cloudai.bench.plot import plot_sweep

        plot_sweep(records, args.plot, args.label)
        progress(f"plot written to {args.plot}")
    return 1 if failed else 0
