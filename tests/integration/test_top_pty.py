"""`cloudai top` on real sockets: the stream follower against a local WebSocket server,
and the whole view rendered headless on a real pty against a real master."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiohttp import WSCloseCode, web

from cloudai.backoff import Backoff
from cloudai.cli.top import TopState, follow
from tests.harness import (
    PERCENT,
    Process,
    async_wait_until,
    child_env,
    cloudai_command,
    plausible_percent,
    start_master,
    start_worker,
    wait_heartbeat,
)
from tests.pty_terminal import PtyTerminal


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Process]:
    process = start_master(tmp_path, "--allow-worker", "w1", "--allow-worker", "w2")
    yield process
    process.kill()


FAST = ("--interval", "0.3")


@pytest.fixture
def worker(tmp_path: Path, master: Process) -> Iterator[Process]:
    process = start_worker(tmp_path, "w1", *FAST, master=master.extra["grpc"])
    wait_heartbeat(master.extra["http"], "w1")  # top's first frame then has real figures
    yield process
    process.kill()


def test_top_shows_the_cluster_and_quits_on_q(
    tmp_path: Path, master: Process, worker: Process
) -> None:
    term = PtyTerminal(
        cloudai_command("top", "--url", master.extra["http"]),
        env=child_env(),
        cwd=tmp_path,
        rows=24,
        columns=110,
    )
    try:
        # Full screen: the alternate screen is used and restored.
        term.expect(r"● connected")
        # The worker's row: its CPU (the machine's, it varies), memory and GPU figures,
        # with the capacities once top has read them from the API (GPU: none without).
        row = term.expect(
            rf"w1\s+active\s+\S*\s*{PERCENT} of (\d+)\s+\S*\s*{PERCENT} [\d.]+/[\d.]+"
            rf"\s+(?:\S*\s*{PERCENT} of \d+|none)\s+0\s+\d"
        )
        plausible_percent(row[1])
        assert int(row[2]) == psutil.cpu_count()
        assert plausible_percent(row[3]) > 0  # memory: a real heartbeat
        if row[4] is not None:
            plausible_percent(row[4])
        term.expect(r"MEM GiB")
        term.expect(r"workers 1 \(1 active\)")
        term.expect(r"sort: id, A to Z")
        assert b"\x1b[?1049h" in term.raw()

        # The master goes away: top says so and keeps retrying.
        mark = term.mark()
        master.kill()
        term.expect(r"disconnected: ", since=mark)
        term.expect(r"retrying in \d", since=mark)

        term.write("q")
        assert term.wait() == 0
        assert b"\x1b[?1049l" in term.raw()
        assert "Traceback" not in term.text()
    finally:
        term.close()


def test_top_reconnects_when_the_master_comes_back(tmp_path: Path) -> None:
    first = start_master(tmp_path, "--allow-worker", "w1", name="first")
    url = first.extra["http"]
    port = first.ready["http_port"]
    term = PtyTerminal(
        cloudai_command("top", "--url", url), env=child_env(), cwd=tmp_path, columns=110
    )
    second: Process | None = None
    try:
        term.expect(r"● connected")
        term.expect(r"no workers yet")
        mark = term.mark()
        first.stop()
        term.expect(r"disconnected", since=mark)
        second = start_master(
            tmp_path, "--allow-worker", "w9", "--http-port", str(port), name="second"
        )
        worker = start_worker(tmp_path, "w9", *FAST, master=second.extra["grpc"])
        try:
            mark = term.mark()
            term.expect(r"● connected", since=mark, timeout=30)
            row = term.expect(rf"w9\s+active\s+\S+\s+{PERCENT}", since=mark)
            plausible_percent(row[1])
        finally:
            worker.kill()
        term.write("\x03")  # Ctrl-C quits too
        assert term.wait() == 0
    finally:
        term.close()
        first.kill()
        if second is not None:
            second.kill()


def test_top_keys_sort_and_show_the_help(tmp_path: Path, master: Process, worker: Process) -> None:
    second = start_worker(tmp_path, "w2", *FAST, master=master.extra["grpc"])
    term: PtyTerminal | None = None
    try:
        wait_heartbeat(master.extra["http"], "w2")
        term = PtyTerminal(
            cloudai_command("top", "--url", master.extra["http"]),
            env=child_env(),
            cwd=tmp_path,
            rows=24,
            columns=110,
        )
        term.expect(r"(?s)WORKER▲.*?\bw1\b.*?\bw2\b")  # by id, A to Z

        mark = term.mark()
        term.write("?")
        term.expect(r"cloudai top: keys", since=mark)
        term.expect(r"c\s+sort by CPU usage", since=mark)
        term.expect(r"q\s+quit", since=mark)

        mark = term.mark()
        term.write("?")  # the help goes, the workers come back
        term.expect(r"(?s)WORKER▲.*?\bw1\b.*?\bw2\b", since=mark)

        mark = term.mark()
        term.write("r")  # reversed: Z to A
        term.expect(r"sort: id, Z to A", since=mark)
        term.expect(r"(?s)WORKER▼.*?\bw2\b.*?\bw1\b", since=mark)

        mark = term.mark()
        term.write("c")
        term.expect(r"sort: cpu, highest first", since=mark)
        term.expect(r"CPU▼", since=mark)

        term.write("q")
        assert term.wait() == 0
        assert "Traceback" not in term.text()
    finally:
        if term is not None:
            term.close()
        second.kill()


# -- the stream follower, on loopback ---------------------------------------------------------


def stream_worker(worker_id: str, cpu: float = 42.0) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "cpu_usage": cpu,
        "memory_usage": 33.0,
        "gpu_usage": 7.0,
        "running_tasks": [],
        "last_update": 1_000_000,
        "is_active": True,
        "storage_usage": 20.0,
    }


async def test_follow_reconnects_and_replaces_the_snapshot() -> None:
    """Connection 1: snapshot + update, then 1001. Connection 2: a new snapshot."""
    connections = 0

    async def stream_text(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if connections == 1:
            snapshot = {"w1": stream_worker("w1"), "w2": stream_worker("w2")}
            await ws.send_str(orjson.dumps(snapshot).decode())
            await ws.send_str(orjson.dumps({"w1": stream_worker("w1", cpu=77.0)}).decode())
            await ws.close(code=WSCloseCode.GOING_AWAY)
        else:
            await ws.send_str(orjson.dumps({"w3": stream_worker("w3")}).decode())
            await ws.receive()  # stay until the client goes
        return ws

    app = web.Application()
    app.router.add_get("/ws/telemetry", stream_text)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"ws://127.0.0.1:{port}/ws/telemetry"
    state = TopState(url)
    seen: list[tuple[str, Any]] = []
    stop = asyncio.Event()

    def changed() -> None:
        seen.append((state.connection, dict(state.workers)))

    task = asyncio.get_running_loop().create_task(
        follow(state, url, changed, stop, Backoff(initial=0.01, maximum=0.02, rng=lambda: 0.0))
    )
    try:
        await async_wait_until(lambda: "w3" in state.workers, 10, "the second snapshot")
        assert set(state.workers) == {"w3"}  # replaced, not merged
        assert state.connection == "connected" and connections == 2
        states = [s for s, _ in seen]
        assert states[:2] == ["connecting", "connected"]
        assert "disconnected" in states
        disconnected = next(i for i, s in enumerate(states) if s == "disconnected")
        assert seen[disconnected - 1][1]["w1"]["cpu_usage"] == 77.0  # the update was merged
        assert set(seen[disconnected - 1][1]) == {"w1", "w2"}
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()


async def test_follow_reports_a_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws/telemetry"
    state = TopState(url)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        follow(state, url, lambda: None, stop, Backoff(initial=5, maximum=5, rng=lambda: 0.0))
    )
    try:
        await async_wait_until(lambda: state.connection == "disconnected", 10, "disconnected")
        assert state.reason == "cannot connect: connection refused"
        assert state.retry_at is not None
        stop.set()
        await asyncio.wait_for(task, 5)  # stop ends the back-off wait at once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
