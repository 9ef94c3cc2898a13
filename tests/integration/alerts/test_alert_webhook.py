"""WebhookSender against in-test receivers: retries with back-off, a bounded queue, and a
slow or dead webhook that delays nobody else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from cloudai.alerts.webhook import WebhookSender
from cloudai.backoff import Backoff
from tests.harness import async_wait_until

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/api/v2/alerts"

    yield start
    for runner in runners:
        await runner.cleanup()


def alert(n: int) -> dict[str, Any]:
    return {"labels": {"alertname": f"a{n}"}, "annotations": {}, "startsAt": "x"}


def fast_backoff() -> Backoff:
    return Backoff(initial=0.01, maximum=0.05)


async def test_retries_until_the_webhook_answers(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    received: list[list[dict[str, Any]]] = []
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.Response(status=503, text="busy")
        received.append(await request.json())
        return web.Response(status=200)

    sender = WebhookSender(await serve(flaky), backoff=fast_backoff())
    sender.start()
    try:
        sender.offer([alert(1), alert(2)])
        # The count goes up once the receiver's answer is read: wait on it.
        await async_wait_until(lambda: sender.stats.sent == 2, 10, "the post after two failures")
        assert received == [[alert(1), alert(2)]]  # one list, as Alertmanager takes it
        assert sender.stats.failed_posts == 2 and sender.stats.sent == 2
    finally:
        await sender.stop()


async def test_gives_up_after_its_attempts_and_bounds_its_queue(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    sender = WebhookSender(
        await serve(broken), attempts=3, queue_size=5, batch=2, backoff=fast_backoff()
    )
    sender.offer([alert(n) for n in range(8)])  # 3 dropped by the bounded queue
    assert sender.queued == 5 and sender.stats.dropped == 3
    sender.start()
    try:
        await async_wait_until(lambda: sender.stats.dropped == 8, 10, "everything dropped")
        assert sender.stats.failed_posts == 9  # 3 batches (2, 2, 1) x 3 attempts
        assert sender.stats.sent == 0
    finally:
        await sender.stop(flush_timeout=0)


async def test_a_slow_webhook_delays_nobody_else(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    release = asyncio.Event()
    fast_received: list[Any] = []

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    async def fast(request: web.Request) -> web.Response:
        fast_received.append(await request.json())
        return web.Response(status=200)

    slow_sender = WebhookSender(await serve(slow), timeout=30)
    fast_sender = WebhookSender(await serve(fast))
    dead_sender = WebhookSender("http://127.0.0.1:9/api/v2/alerts", backoff=fast_backoff())
    senders = [slow_sender, dead_sender, fast_sender]
    for sender in senders:
        sender.start()
    try:
        for n in range(3):
            for sender in senders:
                sender.offer([alert(n)])  # never blocks
            await async_wait_until(lambda n=n: len(fast_received) == n + 1, 10, "fast webhook")
        assert slow_sender.stats.sent == 0  # still stuck in its first post
    finally:
        release.set()
        for sender in senders:
            await sender.stop(flush_timeout=0)
