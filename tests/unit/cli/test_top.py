"""`cloudai top`: pure state and rendering, and the reconnecting stream follower."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import orjson
from aiohttp import WSCloseCode, web
from rich.console import Console

from cloudai.backoff import Backoff
from cloudai.cli.top import TopState, apply_message, bar, follow, render, sort_workers
from tests.harness import async_wait_until

NOW = 1_000_000.0


def worker(worker_id: str, cpu: float = 42.0, active: bool = True, tasks: int = 1) -> dict:
    return {
        "worker_id": worker_id,
        "cpu_usage": cpu,
        "memory_usage": 33.0,
        "gpu_usage": 7.0,
        "running_tasks": [{"task_id": f"t{i}"} for i in range(tasks)],
        "last_update": int(NOW - 4),
        "is_active": active,
        "storage_usage": 20.0,
    }


def text_of(state: TopState, width: int = 110, sort: str = "id") -> str:
    """As rich.live draws it: wrapped to the terminal's width."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, markup=False)
    console.print(render(state, NOW, width, sort))
    return buffer.getvalue()


def test_snapshot_replaces_updates_merge() -> None:
    state = TopState("ws://m/ws/telemetry")
    apply_message(state, {"w1": worker("w1"), "w2": worker("w2")}, snapshot=True)
    apply_message(state, {"w2": worker("w2", cpu=90.0)}, snapshot=False)
    assert state.workers["w2"]["cpu_usage"] == 90.0 and set(state.workers) == {"w1", "w2"}
    apply_message(state, {"w3": worker("w3")}, snapshot=True)  # after a reconnect
    assert set(state.workers) == {"w3"}
    assert (state.messages, state.snapshots) == (3, 2)
    apply_message(state, {"junk": 5}, snapshot=False)
    assert "junk" not in state.workers


def test_bar() -> None:
    assert bar(0, 10).plain == "░" * 10 + "   0.0%"
    assert bar(100, 10).plain == "█" * 10 + " 100.0%"
    assert bar(42, 10).plain == "████▏░░░░░  42.0%"
    assert len(bar(42, 10).plain) == 17
    assert bar(250, 4).plain == "████ 250.0%"  # the bar is capped, the figure is not
    assert bar("x", 4).plain == "░░░░   0.0%"


def test_render_connected() -> None:
    state = TopState("ws://m:8080/ws/telemetry")
    state.connected(NOW)
    apply_message(state, {"w1": worker("w1"), "w2": worker("w2", 5.0, active=False, tasks=0)}, True)
    text = text_of(state)
    assert "cloudai top  ws://m:8080/ws/telemetry  ● connected" in text
    assert "workers 2 (1 active)   tasks 1   avg cpu 42.0%   mem 33.0%   gpu 7.0%" in text
    row = next(line for line in text.splitlines() if line.startswith("w1"))
    assert row.split()[0:2] == ["w1", "active"]
    assert "42.0%" in row and "33.0%" in row and "7.0%" in row and row.rstrip().endswith("4.0s")
    assert any(line.startswith("w2") and "inactive" in line for line in text.splitlines())
    assert "q quits" in text


def test_render_fits_narrow_and_wide_terminals() -> None:
    state = TopState("ws://m/ws/telemetry")
    state.connected(NOW)
    apply_message(state, {"w1": worker("w1")}, True)
    for width in (60, 80, 200):
        text = text_of(state, width)
        assert all(len(line) <= width for line in text.splitlines())
        assert "42.0%" in text


def test_render_connection_states() -> None:
    state = TopState("ws://m/ws/telemetry")
    assert "○ connecting…" in text_of(state) and "waiting for data" in text_of(state)
    state.connected(NOW)
    apply_message(state, {}, True)
    assert "no workers yet" in text_of(state)
    state.disconnected("cannot connect: connection refused", NOW + 2.5)
    assert "✕ disconnected: cannot connect: connection refused; retrying in 2.5 s" in text_of(state)


def test_sort() -> None:
    workers = {"a": worker("a", 10, tasks=3), "b": worker("b", 90, tasks=0), "c": worker("c", 50)}
    assert [w["worker_id"] for w in sort_workers(workers, "id")] == ["a", "b", "c"]
    assert [w["worker_id"] for w in sort_workers(workers, "cpu")] == ["b", "c", "a"]
    assert [w["worker_id"] for w in sort_workers(workers, "tasks")] == ["a", "c", "b"]


async def test_follow_reconnects_and_replaces_the_snapshot() -> None:
    """Connection 1: snapshot + update, then 1001. Connection 2: a new snapshot."""
    connections = 0

    async def stream_text(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if connections == 1:
            await ws.send_str(orjson.dumps({"w1": worker("w1"), "w2": worker("w2")}).decode())
            await ws.send_str(orjson.dumps({"w1": worker("w1", cpu=77.0)}).decode())
            await ws.close(code=WSCloseCode.GOING_AWAY)
        else:
            await ws.send_str(orjson.dumps({"w3": worker("w3")}).decode())
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
    import socket

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
