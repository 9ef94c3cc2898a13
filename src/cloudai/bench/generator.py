"""A generator process: simulates its share of the workers and sends their heartbeats.

Lifecycle, driven by the coordinator over a pipe: connect and register every owned
worker (one gRPC connection per worker by default, like real workers; with ``--tls`` one
TLS connection per worker, presenting that worker's certificate) -> ``ready`` ->
wait for ``start`` -> send heartbeats open-loop until the end time -> wait for the last
answers -> ``result``. Each heartbeat's send time and outcome go to the shared arrays.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cloudai.bench import h2client
from cloudai.bench import h2frames as h2
from cloudai.bench.config import BenchConfig
from cloudai.bench.enrol import WorkerTls
from cloudai.bench.heartbeats import HeartbeatTemplate, worker_info
from cloudai.bench.histogram import Histogram
from cloudai.bench.runtime import receive, run_async
from cloudai.bench.schedule import Layout, OpenLoopSchedule, worker_ids
from cloudai.bench.shared import ACCEPTED, FAILED, SENT, SharedArrays
from cloudai.proto import pb

SERVICE = "/cluster.MasterWorker/"
ACK_OK = pb.HeartbeatAck(success=True).SerializeToString()
CONNECT_BATCH = 256
TLS_CONNECT_BATCH = 64  # TLS handshakes at once (each costs the master a signature)
ANSWER_TIMEOUT = 15.0  # seconds to wait for the last answers after the load
MIN_SLEEP = 0.001
REGISTER_BATCH = 200  # RegisterWorker calls in flight per generator
REGISTER_ATTEMPTS = 5
RETRIABLE = ("grpc-status 1:", "grpc-status 14:", "stream reset")  # shed, not refused
STREAM_OPEN_PAUSE = 0.05  # between batches of new streams
STREAM_SETTLE = 0.5  # then wait this long for streams the master ends at once


@dataclass(slots=True)
class GeneratorSpec:
    index: int
    config: BenchConfig
    grpc_host: str
    grpc_port: int
    shared_path: str
    capacity: int
    connections: int  # gRPC connections of this generator
    tls: WorkerTls | None = None  # --tls: where the workers' keys and certificates are


class _Registration:
    __slots__ = ("done", "left", "refused", "retry")

    def __init__(self, count: int) -> None:
        self.left = count
        self.refused: list[str] = []
        self.retry: list[int] = []
        self.done = asyncio.Event()
        if not count:
            self.done.set()


class _OneShotAnswer:
    """The answer handler of a connection made for one call: passes the answer on, then
    closes the connection (the Go worker's pattern)."""

    __slots__ = ("conn", "on_response")

    def __init__(self, on_response: h2client.ResponseHandler) -> None:
        self.on_response = on_response
        self.conn: h2client.H2Connection | None = None

    def __call__(self, token: Any, ok: bool, message: bytes | None, error: str) -> None:
        self.on_response(token, ok, message, error)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


class Generator:
    def __init__(self, spec: GeneratorSpec, shared: SharedArrays) -> None:
        config = spec.config
        self.spec = spec
        self.g = spec.index
        self.layout = Layout(config.workers, config.gen_count)
        self.owned = list(self.layout.owned(self.g))
        ids = worker_ids(config.workers, config.worker_prefix)
        self.ids = [ids[w] for w in self.owned]
        self.templates = [HeartbeatTemplate(worker_id, config.tasks) for worker_id in self.ids]
        self.rate = self.layout.rate_of(self.g, config.rate)
        self.send_times = shared.send_times
        self.states = shared.states
        self.last_accepted = shared.last_accepted
        self.conns: list[h2client.H2Connection] = []
        self.streams: list[int] = []
        self.rpc = Histogram()
        self.lag = Histogram()
        self.sent = 0
        self.accepted = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_backlog = 0
        self.stream_results: dict[int, tuple[bool, str]] = {}
        self._registration = _Registration(0)
        self._answers = asyncio.Event()
        self._draining = False
        self.connects = 0  # connections made during the load (new connection per heartbeat)
        self._one_shots: set[asyncio.Task[None]] = set()

    # -- set-up ---------------------------------------------------------------------------

    async def connect(self) -> None:
        host, port, tls = self.spec.grpc_host, self.spec.grpc_port, self.spec.tls
        if tls is not None:  # worker j's own connection, with its own certificate
            contexts = [tls.context(worker_id) for worker_id in self.ids]
            for start in range(0, len(contexts), TLS_CONNECT_BATCH):
                chunk = contexts[start : start + TLS_CONNECT_BATCH]
                self.conns += await asyncio.gather(
                    *(
                        h2client.connect(host, port, self.on_response, c, tls.server_hostname)
                        for c in chunk
                    )
                )
            return
        count = max(1, min(self.spec.connections, len(self.owned)))
        if self.spec.config.new_connection_per_heartbeat:
            count = min(count, CONNECT_BATCH)  # for RegisterWorker only, closed after it
        for start in range(0, count, CONNECT_BATCH):
            batch = range(start, min(count, start + CONNECT_BATCH))
            self.conns += await asyncio.gather(
                *(h2client.connect(host, port, self.on_response) for _ in batch)
            )

    def conn_of(self, j: int) -> h2client.H2Connection:
        return self.conns[j % len(self.conns)]

    async def register(self) -> None:
        """RegisterWorker for every owned worker, REGISTER_BATCH at a time; calls the
        master shed under load (CANCELLED, UNAVAILABLE) are retried, refusals are not."""
        address = self.spec.config.worker_address
        todo = list(range(len(self.ids)))
        for attempt in range(REGISTER_ATTEMPTS):
            retry: list[int] = []
            for start in range(0, len(todo), REGISTER_BATCH):
                batch = todo[start : start + REGISTER_BATCH]
                self._registration = _Registration(len(batch))
                for j in batch:
                    conn = self.conn_of(j)
                    headers = conn.request_headers(SERVICE + "RegisterWorker")
                    conn.unary(headers, worker_info(self.ids[j], address), ("register", j))
                await asyncio.wait_for(self._registration.done.wait(), ANSWER_TIMEOUT)
                retry += self._registration.retry
                if self._registration.refused:
                    refused = self._registration.refused
                    raise RuntimeError(f"{len(refused)} workers were refused; first: {refused[0]}")
            if not retry:
                return
            todo = retry
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{len(todo)} workers could not register (the master sheds calls)")

    async def open_streams(self) -> None:
        """One StreamHeartbeats call per owned worker, REGISTER_BATCH at a time (a master
        sheds calls it cannot pick up fast enough); streams shed meanwhile are reopened."""
        self.streams = [0] * len(self.owned)
        todo = list(range(len(self.owned)))
        for attempt in range(REGISTER_ATTEMPTS):
            for start in range(0, len(todo), REGISTER_BATCH):
                for j in todo[start : start + REGISTER_BATCH]:
                    self.stream_results.pop(j, None)
                    conn = self.conn_of(j)
                    headers = conn.request_headers(SERVICE + "StreamHeartbeats")
                    self.streams[j] = conn.open_stream(headers, ("stream", j))
                await asyncio.sleep(STREAM_OPEN_PAUSE)
            await asyncio.sleep(STREAM_SETTLE)
            todo = [j for j in range(len(self.owned)) if j in self.stream_results]
            if not todo:
                return
            self.errors.clear()  # shed while opening, reopened: not an error of the run
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{len(todo)} heartbeat streams were ended by the master at once")

    # -- answers --------------------------------------------------------------------------

    def on_response(self, token: Any, ok: bool, message: bytes | None, error: str) -> None:
        if type(token) is int:
            tag = token
            self.rpc.record((time.monotonic() - self.send_times[tag]) * 1000.0)
            if ok and message == ACK_OK:
                self.states[tag] = ACCEPTED
                self.accepted += 1
                w = self.owned[((tag - 1) // self.layout.generators) % len(self.owned)]
                if tag > self.last_accepted[w]:
                    self.last_accepted[w] = tag
            else:
                self.states[tag] = FAILED
                self.failed += 1
                self.errors[error or "HeartbeatAck success=false"] += 1
            self.in_flight -= 1
            if self._draining and self.in_flight == 0:
                self._answers.set()
            return
        kind, j = token
        if kind == "register":
            registration = self._registration
            if not ok and error.startswith(RETRIABLE):
                registration.retry.append(j)
            elif not ok:
                registration.refused.append(f"{self.ids[j]}: {error}")
            else:
                ack = pb.RegisterAck.FromString(message or b"")
                if not ack.success:
                    registration.refused.append(f"{self.ids[j]}: {ack.message}")
            registration.left -= 1
            if registration.left == 0:
                registration.done.set()
        elif kind == "stream":
            self.stream_results[j] = (ok, error)
            if not ok:
                self.errors[f"stream: {error}"] += 1
            if self._draining and len(self.stream_results) == len(self.streams):
                self._answers.set()

    # -- load -----------------------------------------------------------------------------

    async def run_load(self, start: float, end: float) -> None:
        schedule = OpenLoopSchedule(self.rate, start, end)
        total = schedule.total
        n = len(self.owned)
        g = self.g
        generators = self.layout.generators
        templates = self.templates
        send_times = self.send_times
        states = self.states
        conns = [self.conn_of(j) for j in range(n)]
        unary = self.spec.config.mode == "unary"
        headers = [c.request_headers(SERVICE + "SendHeartbeat") for c in conns]
        one_shot = unary and self.spec.config.new_connection_per_heartbeat
        one_shot_headers = h2.request_headers(SERVICE + "SendHeartbeat", self._authority)
        streams = self.streams
        lag = self.lag
        monotonic = time.monotonic
        time_of = schedule.time_of
        rate = schedule.rate
        k = 0
        await asyncio.sleep(max(0.0, start - monotonic()))
        while k < total:
            due = min(total, int((monotonic() - start) * rate) + 1)
            while k < due:
                j = k % n
                tag = k * generators + g + 1
                message = templates[j].encode(tag)
                now = monotonic()
                send_times[tag] = now
                states[tag] = SENT
                lag.record((now - start - k / rate) * 1000.0)
                if one_shot:
                    self._call_on_new_connection(one_shot_headers, message, tag)
                elif unary:
                    self.in_flight += 1
                    conns[j].unary(headers[j], message, tag)
                elif not conns[j].send(streams[j], message):
                    states[tag] = FAILED
                    self.failed += 1
                    self.errors["stream closed before the end"] += 1
                k += 1
            self.sent = k
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            if k >= total:
                break
            # Bursts of at least MIN_SLEEP: shorter timers only spin the loop (uvloop's
            # timers have 1 ms resolution). Send lag is measured and reported.
            await asyncio.sleep(max(MIN_SLEEP, time_of(k) - monotonic()))
        if not unary:
            self.max_backlog = max(self.max_backlog, sum(c.backlog for c in self.conns))

    @property
    def _authority(self) -> str:
        host, port = self.spec.grpc_host, self.spec.grpc_port
        return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"

    def _call_on_new_connection(self, headers: bytes, message: bytes, tag: int) -> None:
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._one_shot_call(headers, message, tag))
        self._one_shots.add(task)
        task.add_done_callback(self._one_shots.discard)

    async def _one_shot_call(self, headers: bytes, message: bytes, tag: int) -> None:
        answer = _OneShotAnswer(self.on_response)
        try:
            conn = await h2client.connect(self.spec.grpc_host, self.spec.grpc_port, answer)
        except (OSError, TimeoutError) as exc:
            self.on_response(tag, False, None, f"connect failed: {type(exc).__name__}")
            return
        self.connects += 1
        answer.conn = conn
        conn.unary(headers, message, tag)

    def close_registration_connections(self) -> None:
        """New connection per heartbeat: the connections used to register are closed
        before the load, as a Go worker's are."""
        for conn in self.conns:
            conn.close()

    async def finish(self) -> None:
        """Wait for the answers of what was sent (unary) or end every stream (streaming)."""
        self._draining = True
        if self.spec.config.mode == "unary":
            if self.in_flight:
                try:
                    await asyncio.wait_for(self._answers.wait(), ANSWER_TIMEOUT)
                except TimeoutError:
                    self.errors["no answer within 15 s after the load"] += self.in_flight
            return
        for j, stream_id in enumerate(self.streams):
            self.conn_of(j).end_stream(stream_id)
        if len(self.stream_results) < len(self.streams):
            try:
                await asyncio.wait_for(self._answers.wait(), ANSWER_TIMEOUT)
            except TimeoutError:
                missing = len(self.streams) - len(self.stream_results)
                self.errors["stream not answered within 15 s after the load"] += missing
        self._settle_streams()

    def _settle_streams(self) -> None:
        """A stream answered OK means the master accepted every heartbeat on it."""
        n = len(self.owned)
        generators = self.layout.generators
        for k in range(self.sent):
            j = k % n
            tag = k * generators + self.g + 1
            if self.states[tag] != SENT:
                continue
            ok, _error = self.stream_results.get(j, (False, ""))
            if ok:
                self.states[tag] = ACCEPTED
                self.accepted += 1
                w = self.owned[j]
                if tag > self.last_accepted[w]:
                    self.last_accepted[w] = tag
            else:
                self.states[tag] = FAILED
                self.failed += 1

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def result(self, cpu_seconds: float, window: float) -> dict[str, Any]:
        return {
            "generator": self.g,
            "workers": len(self.owned),
            "connections": len(self.conns),
            "rate": self.rate,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "errors": dict(self.errors),
            "rpc": self.rpc,
            "lag": self.lag,
            "cpu_seconds": cpu_seconds,
            "window": window,
            "max_in_flight": self.max_in_flight,
            "max_backlog": self.max_backlog,
            "connects": self.connects,
        }


async def _main(spec: GeneratorSpec, pipe: Connection) -> None:
    shared = SharedArrays(Path(spec.shared_path), spec.capacity, spec.config.workers)
    generator = Generator(spec, shared)
    try:
        await generator.connect()
        await generator.register()
        if spec.config.mode == "stream":
            await generator.open_streams()
        if spec.config.new_connection_per_heartbeat:
            generator.close_registration_connections()
        pipe.send(("ready", {"workers": len(generator.owned)}))
        message = await receive(pipe)
        if message[0] != "start":
            return
        _kind, start, end = message
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu0 = time.process_time()
        await generator.run_load(start, end)
        cpu1 = time.process_time()
        window = max(time.monotonic(), end) - start
        await generator.finish()
        pipe.send(("result", generator.result(cpu1 - cpu0, window)))
    except Exception as exc:  # reported to the coordinator, which prints it
        pipe.send(("error", f"generator {spec.index}: {type(exc).__name__}: {exc}"))
    finally:
        generator.close()
        await asyncio.sleep(0.05)
        del generator
        shared.close()


def generator_main(spec: GeneratorSpec, pipe: Connection) -> None:
    """Process entry point (multiprocessing, spawn)."""
    run_async(_main(spec, pipe))
