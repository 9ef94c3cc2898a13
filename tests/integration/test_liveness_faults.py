"""Liveness under faults, with real processes: a real master (inactivity timeout
shortened to 6 s, WebSocket ping/timeout to 2 s/4 s so that a pause is long against all
of them; the behaviour scales) and real workers heartbeating every second.

- the master paused (SIGSTOP) for twice the timeout: no worker is marked inactive and no
  dashboard is disconnected;
- a worker paused for less than the timeout: it stays active; for more: inactive, then
  active again when it resumes;
- a worker killed: inactive within the timeout and one check interval.

And the same stall in-process: the event loop blocked (``time.sleep`` inside the loop
*is* the fault here) must not drop a WebSocket client.

``scripts/fault_pause.py`` runs the full-length scenario (40 workers, 30 s timeout,
pauses of 40 s and 60 s); docs/RELIABILITY.md has its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from cloudai.master.http_app import LOOP_WATCH_KEY, WebSocketConfig, create_app
from cloudai.master.ws_hub import TelemetryHub
from cloudai.telemetry.manager import TelemetryManager
from tests.harness import Process, async_wait_until, start_master, start_worker

pytestmark = pytest.mark.fault

TIMEOUT = 6.0  # --inactivity-timeout
CHECK = 1.0  # the checker's interval at this timeout: min(timeout / 4, 1 s)
MASTER_ARGS = (
    "--inactivity-timeout",
    str(TIMEOUT),
    "--ws-ping-interval",
    "2",
    "--ws-client-timeout",
    "4",
)
WORKER_ARGS = ("--interval", "1")


@dataclass
class StreamWatch:
    """A dashboard: every worker state it receives, with the time it arrived."""

    ws: aiohttp.ClientWebSocketResponse
    seen: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed_at: float | None = None
    close_code: int | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.monotonic()
            for worker_id, state in orjson.loads(msg.data).items():
                self.seen.append((now, worker_id, state))
                self.latest[worker_id] = state
        self.closed_at = time.monotonic()
        self.close_code = self.ws.close_code

    def state(self, worker_id: str) -> str | None:
        return self.latest.get(worker_id, {}).get("state")

    def inactive_since(self, since: float, worker_id: str | None = None) -> list[str]:
        return [
            w
            for t, w, state in self.seen
            if t >= since
            and (worker_id is None or w == worker_id)
            and (state["is_active"] is False or state["state"] == "inactive")
        ]

    async def until(self, worker_id: str, state: str, timeout: float = 30.0) -> float:
        await async_wait_until(
            lambda: self.state(worker_id) == state, timeout, f"{worker_id} {state}"
        )
        return time.monotonic()


@contextlib.asynccontextmanager
async def watch(master: Process) -> AsyncIterator[StreamWatch]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(master.extra["ws"] + "/ws/telemetry") as ws,
    ):
        stream = StreamWatch(ws)
        reader = asyncio.ensure_future(stream.read())
        try:
            yield stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.send_signal(signal.SIGCONT)
        process.close()


def cluster(tmp_path: Path, procs: list[Process], n: int) -> tuple[Process, list[Process]]:
    ids = [f"w{i}" for i in range(n)]
    allow = [arg for w in ids for arg in ("--allow-worker", w)]
    master = start_master(tmp_path, *MASTER_ARGS, *allow)
    procs.append(master)
    workers = []
    for worker_id in ids:
        worker = start_worker(tmp_path, worker_id, *WORKER_ARGS, master=master.extra["grpc"])
        procs.append(worker)
        workers.append(worker)
    return master, workers


async def health(master: Process) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(master.extra["http"] + "/health") as r:
        return await r.json()  # type: ignore[no-any-return]


async def all_active(stream: StreamWatch, n: int) -> None:
    for i in range(n):
        await stream.until(f"w{i}", "active")


async def test_a_paused_master_marks_nobody_inactive_and_drops_no_dashboard(
    tmp_path: Path, procs: list[Process]
) -> None:
    master, _ = cluster(tmp_path, procs, 3)
    async with watch(master) as a, watch(master) as b:
        await all_active(a, 3)
        paused = time.monotonic()
        master.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(2 * TIMEOUT)  # the fault: the master is stopped this long
        finally:
            master.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        # Every worker is heard from again after the resume...
        await async_wait_until(
            lambda: all(any(t > resumed and w == f"w{i}" for t, w, _ in a.seen) for i in range(3)),
            30,
            "heartbeats after the resume",
        )
        # ...and for a timeout and two checks after it, nobody is declared inactive.
        await async_wait_until(lambda: time.monotonic() > resumed + TIMEOUT + 2 * CHECK, 30)
        assert a.inactive_since(paused) == [] and b.inactive_since(paused) == []
        assert (a.closed_at, a.close_code, b.closed_at) == (None, None, None)
        body = await health(master)
        assert body["active_workers"] == 3 and body["inactive_workers"] == 0
        assert body["master_stalls"] >= 1
        assert body["active_clients"] == 2


async def test_a_worker_paused_briefly_stays_active_and_longer_comes_back(
    tmp_path: Path, procs: list[Process]
) -> None:
    master, workers = cluster(tmp_path, procs, 3)
    async with watch(master) as stream:
        await all_active(stream, 3)
        w1 = workers[1]
        since = time.monotonic()
        w1.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(TIMEOUT / 2)  # the fault: less than the timeout
        finally:
            w1.send_signal(signal.SIGCONT)
        await async_wait_until(
            lambda: any(t > since + TIMEOUT / 2 and w == "w1" for t, w, _ in stream.seen), 20
        )
        assert stream.inactive_since(since) == []

        since = time.monotonic()
        w1.send_signal(signal.SIGSTOP)
        try:
            went = await stream.until("w1", "inactive", timeout=TIMEOUT + 10)
        finally:
            w1.send_signal(signal.SIGCONT)
        assert went - since >= TIMEOUT - 1.0  # its last heartbeat was up to 1 s before
        await stream.until("w1", "active")
        assert stream.inactive_since(since) == ["w1"]  # the others stayed active


async def test_a_killed_worker_is_inactive_within_the_timeout_and_a_check(
    tmp_path: Path, procs: list[Process]
) -> None:
    master, workers = cluster(tmp_path, procs, 3)
    async with watch(master) as stream:
        await all_active(stream, 3)
        killed = time.monotonic()
        workers[2].kill()
        went = await stream.until("w2", "inactive", timeout=TIMEOUT + 10)
        # Detection: silent for the timeout (the last heartbeat came up to 1 s before the
        # kill), seen at the next check; 1 s of slack for a loaded machine.
        assert went - killed <= TIMEOUT + CHECK + 1.0, went - killed
        states = [s["state"] for _, w, s in stream.seen if w == "w2" and _ >= killed]
        assert states[-2:] == ["suspect", "inactive"]
        assert stream.inactive_since(killed) == ["w2"]


async def test_a_blocked_event_loop_does_not_drop_a_websocket_client() -> None:
    """In-process: the master's event loop is blocked for 3 s (longer than the 1 s client
    timeout); its keepalive must ping after the resume, not drop the client at once."""
    telemetry = TelemetryManager(30.0)
    hub = TelemetryHub()
    app = create_app(telemetry, hub, WebSocketConfig(ping_interval=0.5, client_timeout=1.0))
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws/telemetry")) as ws:
            assert orjson.loads((await ws.receive()).data) == {}
            await asyncio.sleep(0.7)  # let a ping/pong round happen first
            time.sleep(3.0)  # noqa: ASYNC251 (the fault: the loop, master and client, stops)
            ended = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({ended}, timeout=3.0)  # several keepalive rounds
            assert not done, f"the client was dropped: {ended.result()}"
            assert hub.client_count == 1
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ended
        assert app[LOOP_WATCH_KEY].stalls >= 1


async def test_a_silent_websocket_client_is_still_dropped() -> None:
    """The other side: a client that answers no ping is dropped (close 1001)."""
    telemetry = TelemetryManager(30.0)
    hub = TelemetryHub()
    app = create_app(telemetry, hub, WebSocketConfig(ping_interval=0.3, client_timeout=0.6))
    async with (
        TestServer(app) as server,
        aiohttp.ClientSession() as http,
        http.ws_connect(server.make_url("/ws/telemetry"), autoping=False) as ws,
    ):
        began = time.monotonic()
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10.0)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        assert 0.6 <= time.monotonic() - began < 5.0
