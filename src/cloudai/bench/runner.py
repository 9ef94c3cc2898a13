"""One benchmark run, end to end: master, generator and client processes, figures.

Order: (own master) -> (``--tls``: every worker joins, see ``enrol.py``) -> shared arrays
-> generators connect and register every worker ->
clients connect and receive their snapshot -> common start time -> load for
``duration`` (master CPU measured over exactly that window, RSS sampled throughout) ->
last answers -> drain -> clients report -> (own master stopped) -> one result dict.
"""

from __future__ import annotations

import json
import multiprocessing
import ssl
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from cloudai.addresses import split_host_port
from cloudai.bench.clients import ClientSpec, clients_main
from cloudai.bench.config import BenchConfig, batch_window
from cloudai.bench.enrol import MasterAccess, WorkerTls, enrol, read_admin_token
from cloudai.bench.generator import GeneratorSpec, generator_main
from cloudai.bench.histogram import Histogram
from cloudai.bench.local_master import ChildServer, FloorMaster, LocalMaster
from cloudai.bench.monitor import ProcessMonitor
from cloudai.bench.report import build_record
from cloudai.bench.schedule import Layout, worker_ids
from cloudai.bench.shared import SharedArrays

READY_TIMEOUT = 180.0  # 10,000 connections and registrations take a while
SAMPLE_INTERVAL = 0.5
START_DELAY = 0.5
SETTLE_CPU = 0.15  # the master is quiet below 15 % of a core (over half a second)
SETTLE_TIMEOUT = 60.0  # registrations make the master write them; wait for that to end

Progress = Callable[[str], None]


class BenchError(RuntimeError):
    pass


class _Child:
    def __init__(self, name: str, process: Any, pipe: Connection) -> None:
        self.name = name
        self.process = process
        self.pipe = pipe
        self.result: dict[str, Any] | None = None


_SECURE_SCHEMES = ("wss", "https")


def _split_ws_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http", *_SECURE_SCHEMES):
        raise BenchError(f"--ws-url must be ws://host:port/path: {url}")
    path = parts.path or "/ws/telemetry"
    if path == "/":
        path = "/ws/telemetry"
    default_port = 443 if parts.scheme in _SECURE_SCHEMES else 80
    return parts.hostname or "127.0.0.1", parts.port or default_port, path


def status_url(ws_url: str) -> str:
    """The master's ``/api/status`` next to its telemetry WebSocket (one HTTP server):
    ``https`` for a ``wss`` URL."""
    host, port, _path = _split_ws_url(ws_url)
    scheme = "https" if urlsplit(ws_url).scheme in _SECURE_SCHEMES else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/api/status"


def fanout_tick_of(document: Any) -> float | None:
    """``fanout_tick_ms`` of an ``/api/status`` answer (``cloudai.api.models.ClusterSummary``):
    the master's current fan-out tick; None when the master does not report it."""
    if not isinstance(document, dict):
        return None
    value = document.get("fanout_tick_ms")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def read_fanout_tick(
    ws_url: str, access: MasterAccess | None = None, timeout: float = 2.0
) -> float | None:
    """The master's fan-out tick in ms, or None (no such endpoint, a token needed, ...).

    ``GET /api/status`` needs no token from loopback on our master with ``--insecure``;
    a secure one gets ``access``'s token, over HTTPS verified against its CA."""
    request = urllib.request.Request(status_url(ws_url))
    context: ssl.SSLContext | None = None
    if access is not None:
        for name, value in access.headers.items():
            request.add_header(name, value)
        context = access.context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return fanout_tick_of(json.load(response))
    except (OSError, ValueError):
        return None


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _await_all(
    children: list[_Child], kind: str, timeout: float, tick: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Wait until every child sent ``kind``; raise on an ``error`` message or a timeout."""
    deadline = time.monotonic() + timeout
    pending = {child.pipe: child for child in children}
    answers: dict[str, Any] = {}
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(child.name for child in pending.values())
            raise BenchError(f"no {kind!r} from {names} after {timeout:.0f} s")
        for ready in wait(list(pending), timeout=min(left, SAMPLE_INTERVAL)):
            pipe = cast(Connection, ready)
            child = pending.pop(pipe)
            try:
                message = pipe.recv()
            except EOFError:
                raise BenchError(f"{child.name} exited (code {child.process.exitcode})") from None
            if message[0] == "error":
                raise BenchError(message[1])
            if message[0] != kind:
                raise BenchError(f"{child.name}: expected {kind!r}, got {message[0]!r}")
            answers[child.name] = message[1]
        if tick is not None:
            tick()
    return answers


def _sleep_until(deadline: float, tick: Callable[[], None]) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, SAMPLE_INTERVAL))
        tick()


def run_once(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    config.validate()
    say = progress or (lambda _text: None)
    with tempfile.TemporaryDirectory(prefix="cloudai-bench-") as tmp:
        return _run(config, Path(tmp), say)


def _run(config: BenchConfig, workdir: Path, say: Progress) -> dict[str, Any]:
    ids = worker_ids(config.workers, config.worker_prefix)
    master: ChildServer | None = None
    children: list[_Child] = []
    shared: SharedArrays | None = None
    access: MasterAccess | None = None
    worker_tls: WorkerTls | None = None
    extra: dict[str, Any] = {}
    try:
        master_pid: int | None
        if config.grpc is None:
            if config.target == "floor":
                master = FloorMaster(workdir, config.server)
            else:
                master = LocalMaster(
                    workdir,
                    ids,
                    ws_batch_ms=config.ws_batch_ms,
                    inactivity_timeout=config.inactivity_timeout,
                    extra_args=[
                        *config.master_args,
                        *(["--ws-compression"] if config.ws_deflate else []),
                    ],
                    secure=config.tls,
                    server=config.server,
                )
            master.start()
            grpc_target, ws_url, master_pid = master.grpc, master.ws_url, master.pid
            say(f"{master.name} pid {master.pid}: gRPC {grpc_target} {ws_url}".rstrip())
            if isinstance(master, LocalMaster) and master.secure:
                access = MasterAccess(str(master.ca_file), read_admin_token(master.data_dir))
                say(f"enrolling {len(ids)} workers (POST /api/join, a certificate each)")
                credentials = workdir / "workers"
                enrolment = enrol(master.http_base, access, ids, credentials)
                extra["enrolment"] = enrolment.summary()
                say(f"enrolled in {enrolment.seconds:.1f} s")
                worker_tls = WorkerTls(access.ca_file, str(credentials))
        else:
            grpc_target = config.grpc
            ws_url = config.ws_url or ""
            if urlsplit(ws_url).scheme in _SECURE_SCHEMES:
                raise BenchError("--ws-url: plaintext ws:// only; --tls measures a secure master")
            master_pid = config.master_pid
        grpc_host, grpc_port = split_host_port(grpc_target)
        layout = Layout(config.workers, config.gen_count)
        capacity = layout.capacity(config.rate, config.duration)
        shared = SharedArrays.create(workdir / "shared.bin", capacity, config.workers)
        context = multiprocessing.get_context("spawn")

        connections = config.connections or config.workers
        per_generator = _shares(max(connections, layout.generators), layout.generators)
        generators = []
        for g in range(layout.generators):
            spec = GeneratorSpec(
                g,
                config,
                grpc_host,
                grpc_port,
                str(shared.path),
                capacity,
                per_generator[g],
                worker_tls,
            )
            generators.append(_spawn(context, f"generator {g}", generator_main, spec))
        children += generators
        say(f"{len(generators)} generator processes: connecting and registering workers")
        _await_all(generators, "ready", READY_TIMEOUT)

        clients: list[_Child] = []
        processes = config.client_process_count
        if processes:
            ws_host, ws_port, ws_path = _split_ws_url(ws_url)
            normal = _shares(config.clients, processes)
            tracked = _shares(min(config.track_clients, config.clients), processes)
            slow = _shares(config.slow_clients, processes)
            for p in range(processes):
                spec_c = ClientSpec(
                    p,
                    config,
                    ws_host,
                    ws_port,
                    ws_path,
                    str(shared.path),
                    capacity,
                    normal[p],
                    min(tracked[p], normal[p]),
                    slow[p],
                    access,
                    sum(normal[:p]) + sum(slow[:p]),
                )
                clients.append(_spawn(context, f"client process {p}", clients_main, spec_c))
            children += clients
            say(f"{processes} client processes: connecting {config.clients} clients")
            _await_all(clients, "ready", READY_TIMEOUT)

        monitor = ProcessMonitor(master_pid) if master_pid else None
        tick = monitor.sample if monitor is not None else (lambda: None)
        if monitor is not None:
            quiet = monitor.wait_quiet(SETTLE_CPU, SETTLE_TIMEOUT)
            say(f"master settled after registration ({quiet:.1f} s)")
        # The master's fan-out tick with every client connected: it decides which
        # heartbeats the master may merge (``batch_window``). Read again after the load.
        fanout_ticks = [read_fanout_tick(ws_url, access)] if clients else []
        start = time.monotonic() + START_DELAY
        end = start + config.duration
        for child in children:
            child.pipe.send(("start", start, end))
        say(f"load: {config.rate:g} heartbeats/s for {config.duration:g} s ({config.mode})")
        _sleep_until(start, lambda: None)
        if monitor is not None:
            monitor.begin()
        _sleep_until(end, tick)
        if monitor is not None:
            monitor.end()
        gen_results = _await_all(generators, "result", 60.0, tick)
        drain_until = time.monotonic() + config.drain
        if config.slow_clients and config.slow_for > 0:
            resume = start + config.slow_after + config.slow_for
            drain_until = max(drain_until, resume + config.drain)
        _sleep_until(drain_until, tick)
        fanout: dict[str, Any] = {}
        if clients:
            fanout_ticks.append(read_fanout_tick(ws_url, access))
            reported = [t for t in fanout_ticks if t is not None]
            fanout = {
                "fanout_tick_ms": max(reported) if reported else config.assumed_tick_ms,
                "fanout_tick_from": "master" if reported else "assumed",
            }
        window = batch_window(fanout.get("fanout_tick_ms", config.assumed_tick_ms))
        for child in clients:
            child.pipe.send(("stop", window))
        client_results = _await_all(clients, "result", 120.0, tick)
        return build_record(
            config,
            _merge_generators(list(gen_results.values())),
            {**_merge_clients(list(client_results.values())), **fanout} if client_results else None,
            monitor,
            {
                "generators": layout.generators,
                "client_processes": processes,
                "connections": sum(r["connections"] for r in gen_results.values()),
            },
            extra,
        )
    finally:
        for child in children:
            child.process.join(timeout=5.0)
            if child.process.is_alive():
                child.process.terminate()
                child.process.join(timeout=5.0)
            child.pipe.close()
        if shared is not None:
            shared.close()
        if master is not None:
            code = master.stop()
            if code not in (0, None):
                say(f"the master exited with {code}: {master.log()}")


def _spawn(context: Any, name: str, target: Callable[..., None], spec: Any) -> _Child:
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(spec, child), name=name, daemon=True)
    process.start()
    child.close()
    return _Child(name, process, parent)


def _merge_generators(results: list[dict[str, Any]]) -> dict[str, Any]:
    rpc, lag = Histogram(), Histogram()
    errors: Counter[str] = Counter()
    for r in results:
        rpc.merge(r["rpc"])
        lag.merge(r["lag"])
        errors.update(r["errors"])
    return {
        "sent": sum(r["sent"] for r in results),
        "accepted": sum(r["accepted"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "errors": dict(errors),
        "rpc": rpc,
        "lag": lag,
        "cpu_seconds": sum(r["cpu_seconds"] for r in results),
        "max_in_flight": sum(r["max_in_flight"] for r in results),
        "max_backlog": sum(r["max_backlog"] for r in results),
        "connects": sum(r.get("connects", 0) for r in results),
    }


def _merge_clients(results: list[dict[str, Any]]) -> dict[str, Any]:
    latency, slow_latency = Histogram(), Histogram()
    merged: dict[str, Any] = {}
    for r in results:
        latency.merge(r["latency"])
        slow_latency.merge(r["slow_latency"])
        for key, value in r.items():
            if key == "quiet_wait":
                merged[key] = max(merged.get(key, 0.0), value)
            elif isinstance(value, int | float) and key != "accepted_seen_by_process":
                merged[key] = merged.get(key, 0) + value
    merged["latency"] = latency
    merged["slow_latency"] = slow_latency
    return merged
