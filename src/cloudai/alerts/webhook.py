"""Sending alerts to one webhook (an Alertmanager, or anything that takes its v2 API's
``POST /api/v2/alerts`` body: a JSON list of alerts).

Each webhook has its own bounded queue and its own task, so a slow or dead receiver
delays nothing else: ``offer`` never blocks (when the queue is full the oldest alert is
dropped and counted). The task posts what is queued as one list (at most ``batch``
alerts), retries a failed post with capped exponential back-off up to ``attempts`` times,
then drops it with one log line. Failures are logged once until the webhook answers
again, and counted (``stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cloudai.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WebhookStats:
    sent: int = 0  # alerts delivered (2xx)
    posts: int = 0  # successful POSTs
    failed_posts: int = 0  # attempts that failed (retried or not)
    dropped: int = 0  # alerts given up: queue full, or attempts exhausted


class WebhookSender:
    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 1000,
        batch: int = 100,
        attempts: int = 6,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        if queue_size < 1 or batch < 1 or attempts < 1:
            raise ValueError("queue_size, batch and attempts must be >= 1")
        self.url = url
        self.batch = batch
        self.attempts = attempts
        self.timeout = timeout
        self._backoff = backoff or Backoff(initial=0.5, maximum=30.0)
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_size)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self._idle: asyncio.Event | None = None
        self.stats = WebhookStats()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, alerts: list[dict[str, Any]]) -> None:
        """Queue alerts for sending; never blocks, never raises."""
        queue = self._queue
        for alert in alerts:
            if len(queue) == queue.maxlen:
                self.stats.dropped += 1  # the deque drops the oldest
            queue.append(alert)
        if self._wake is not None:
            self._wake.set()
        if self._idle is not None and queue:
            self._idle.clear()

    def start(self) -> None:
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        if not self._queue:
            self._idle.set()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, json_serialize=_dumps)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"alert-webhook {self.url}"
        )

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Try to send what is queued for up to ``flush_timeout`` seconds, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._queue and self._idle is not None and flush_timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), flush_timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drained(self) -> None:
        """Wait until nothing is queued or being sent (for tests)."""
        if self._idle is not None:
            await self._idle.wait()

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            count = min(self.batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            await self._deliver(batch)

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        backoff = self._backoff
        backoff.reset()
        for attempt in range(1, self.attempts + 1):
            problem = await self._post(batch)
            if problem is None:
                self.stats.posts += 1
                self.stats.sent += len(batch)
                if self._failing:
                    self._failing = False
                    log.info("alert webhook %s answers again", self.url)
                return
            self.stats.failed_posts += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "alert webhook %s failed: %s (retrying with back-off; logged once "
                    "until it answers)",
                    self.url,
                    problem,
                )
            if attempt < self.attempts:
                await asyncio.sleep(backoff.next_delay())
        self.stats.dropped += len(batch)
        log.warning(
            "alert webhook %s: %d alert(s) dropped after %d attempts",
            self.url,
            len(batch),
            self.attempts,
        )

    async def _post(self, batch: list[dict[str, Any]]) -> str | None:
        """None when the webhook took it; else why not, in a few words."""
        assert self._session is not None
        try:
            async with self._session.post(self.url, json=batch) as answer:
                if 200 <= answer.status < 300:
                    await answer.read()
                    return None
                text = (await answer.text(errors="replace"))[:200].strip()
                return f"HTTP {answer.status}" + (f": {text}" if text else "")
        except TimeoutError:
            return f"no answer in {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except OSError as exc:
            return exc.strerror or str(exc)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
