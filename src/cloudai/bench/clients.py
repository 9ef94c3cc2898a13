"""A client process: simulates dashboards on the telemetry WebSocket.

Lifecycle, driven by the coordinator over a pipe: connect every client and wait for its
snapshot -> ``ready`` -> ``start`` (trackers begin; slow clients pause and resume on
schedule) -> ``stop`` after the drain -> each client's figures -> ``result``.

Tracked clients parse every frame (tags, latency, gaps); the others only count worker
entries, so a thousand clients cost the machine little more than the master's sends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cloudai.bench import wsclient
from cloudai.bench.config import BenchConfig
from cloudai.bench.enrol import MasterAccess
from cloudai.bench.histogram import Histogram
from cloudai.bench.runtime import receive, run_async
from cloudai.bench.schedule import Layout, worker_ids
from cloudai.bench.shared import SharedArrays
from cloudai.bench.tracking import Tracker, count_workers

CONNECT_BATCH = 100
PING_INTERVAL = 20.0  # client pings keep paused clients within the server's idle timeout
SLOW_RECEIVE_BUFFER = 64 * 1024
QUIET_IDLE = 0.3  # after the drain, wait until clients read nothing for this long
QUIET_TIMEOUT = 20.0


@dataclass(slots=True)
class ClientSpec:
    index: int
    config: BenchConfig
    ws_host: str
    ws_port: int
    ws_path: str
    shared_path: str
    capacity: int
    normal: int  # clients that keep up
    tracked: int  # how many of them are tracked
    slow: int  # clients that pause (always tracked)
    access: MasterAccess | None = None  # --tls: WSS with the CA and the admin token


class _Counter:
    """An untracked client's state: worker entries received while active."""

    __slots__ = ("active", "entries")

    def __init__(self) -> None:
        self.entries = 0
        self.active = False


def _on_message(client: wsclient.WsClient, payload: bytes, received_at: float) -> None:
    state = client.tag
    if type(state) is _Counter:
        if state.active:
            state.entries += count_workers(payload)
    else:
        state.on_frame(payload, received_at)


class ClientGroup:
    def __init__(self, spec: ClientSpec, shared: SharedArrays) -> None:
        self.spec = spec
        self.shared = shared
        config = spec.config
        ids = worker_ids(config.workers, config.worker_prefix)
        self.index_of = {worker_id.encode(): i for i, worker_id in enumerate(ids)}
        self.layout = Layout(config.workers, config.gen_count)
        self.normal: list[wsclient.WsClient] = []
        self.slow: list[wsclient.WsClient] = []
        self.failed_connects: list[str] = []

    def _state(self, tracked: bool) -> Tracker | _Counter:
        if tracked:
            return Tracker(self.index_of, self.shared.send_times, self.spec.capacity)
        return _Counter()

    async def connect(self) -> None:
        spec = self.spec
        plan = [(i < spec.tracked, False) for i in range(spec.normal)]
        plan += [(True, True)] * spec.slow
        access = spec.access
        context = access.context() if access is not None else None
        for start in range(0, len(plan), CONNECT_BATCH):
            batch = plan[start : start + CONNECT_BATCH]
            clients = await asyncio.gather(
                *(
                    wsclient.connect(
                        spec.ws_host,
                        spec.ws_port,
                        spec.ws_path,
                        _on_message,
                        self._state(tracked),
                        SLOW_RECEIVE_BUFFER if slow else None,
                        context,
                        access.server_hostname if access is not None else None,
                        access.headers if access is not None else None,
                    )
                    for tracked, slow in batch
                )
            )
            await asyncio.wait_for(
                asyncio.gather(*(c.first_message for c in clients)), timeout=30.0
            )
            for client, (_tracked, slow) in zip(clients, batch, strict=True):
                (self.slow if slow else self.normal).append(client)

    @property
    def clients(self) -> list[wsclient.WsClient]:
        return self.normal + self.slow

    def start(self, start: float) -> None:
        for client in self.clients:
            client.tag.active = True
        config = self.spec.config
        loop = asyncio.get_running_loop()
        delay = start - time.monotonic()
        if self.slow and config.slow_for > 0:
            loop.call_later(delay + config.slow_after, self._pause_slow)
            loop.call_later(delay + config.slow_after + config.slow_for, self._resume_slow)
        loop.call_later(PING_INTERVAL, self._ping)

    def _pause_slow(self) -> None:
        for client in self.slow:
            client.pause()

    def _resume_slow(self) -> None:
        for client in self.slow:
            client.resume()

    def _ping(self) -> None:
        for client in self.clients:
            client.ping()
        asyncio.get_running_loop().call_later(PING_INTERVAL, self._ping)

    async def quiet(self, idle: float = QUIET_IDLE, timeout: float = QUIET_TIMEOUT) -> float:
        """Wait until no client has read anything for ``idle`` s (all caught up)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            latest = max((c.last_received for c in self.clients), default=0.0)
            if time.monotonic() - latest >= idle:
                break
            await asyncio.sleep(idle / 3)
        return time.monotonic() - started

    def result(self, cpu_seconds: float, quiet_wait: float, window: float) -> dict[str, Any]:
        """Figures of every client; ``window``: see ``config.batch_window``."""
        shared = self.shared
        accepted = shared.accepted_tags()
        last_accepted = list(shared.last_accepted)
        latency = Histogram()
        slow_latency = Histogram()
        missed = coalesced = stale = slow_stale = tracked = 0
        shortfall = entries = 0
        slow_messages = 0
        for client in self.normal:
            state = client.tag
            if isinstance(state, Tracker):
                tracked += 1
                latency.merge(state.latency)
                gaps = state.gaps(self.layout, accepted, shared.states, window)
                missed += gaps[0]
                coalesced += gaps[1]
                stale += state.stale(last_accepted)
                entries += state.fragments
            else:
                entries += state.entries
                shortfall += max(0, len(accepted) - state.entries)
        for client in self.slow:
            state = client.tag
            slow_latency.merge(state.latency)
            slow_stale += state.stale(last_accepted)
            slow_messages += client.messages
        return {
            "clients": len(self.normal),
            "tracked": tracked,
            "slow_clients": len(self.slow),
            "messages": sum(c.messages for c in self.normal),
            "bytes": sum(c.bytes for c in self.normal),
            "entries": entries,
            "latency": latency,
            "missed": missed,
            "coalesced": coalesced,
            "stale": stale,
            "untracked_shortfall": shortfall,
            "slow_latency": slow_latency,
            "slow_stale": slow_stale,
            "slow_messages": slow_messages,
            "dropped": sum(1 for c in self.clients if c.transport is None),
            "accepted_seen_by_process": len(accepted),
            "cpu_seconds": cpu_seconds,
            "quiet_wait": quiet_wait,
        }

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def _main(spec: ClientSpec, pipe: Connection) -> None:
    shared = SharedArrays(Path(spec.shared_path), spec.capacity, spec.config.workers)
    group = ClientGroup(spec, shared)
    try:
        await group.connect()
        pipe.send(("ready", {"clients": len(group.clients)}))
        message = await receive(pipe)
        if message[0] != "start":
            return
        _kind, start, end = message
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        group.start(start)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu1 = time.process_time()
        message = await receive(pipe)  # ("stop", batch window in seconds)
        quiet_wait = await group.quiet()
        pipe.send(("result", group.result(cpu1 - cpu0, quiet_wait, message[1])))
    except Exception as exc:  # reported to the coordinator, which prints it
        pipe.send(("error", f"client process {spec.index}: {type(exc).__name__}: {exc}"))
    finally:
        group.close()
        await asyncio.sleep(0.05)
        del group
        shared.close()


def clients_main(spec: ClientSpec, pipe: Connection) -> None:
    """Process entry point (multiprocessing, spawn)."""
    run_async(_main(spec, pipe))
