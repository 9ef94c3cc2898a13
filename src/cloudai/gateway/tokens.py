"""The API tokens a gateway checks on its WebSockets (secure mode), copied from the master.

The master keeps the tokens. A gateway asks it for their records over the bus
(``ApiTokens``: each token's id, the SHA-256 of its secret, its scope, its expiry and
revocation times; never a secret, never a join token) and checks a token with the
master's own function (``security.tokens.authenticate_api_token``): a dict lookup and a
constant-time comparison, no I/O, so ``install_auth`` applies the master's policy
unchanged. ``TokenTable`` holds the copy (pure); ``TokenRefresher`` fetches it at start,
again when the master says a token changed (``tokens``) or it restarted (``reset``), and
every 60 s (core NATS does not deliver again an event a gateway missed). Until the first
answer every token is refused (401); when a later fetch fails the last copy is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudai.bus.base import Bus, BusUnavailable
from cloudai.bus.codec import (
    ApiTokenEntry,
    BusDecodeError,
    ForwardedCall,
    decode_api_tokens,
    decode_reply,
    encode_call,
)
from cloudai.bus.subjects import Subjects
from cloudai.security.tokens import Scope, authenticate_api_token

log = logging.getLogger(__name__)

REFRESH_EVERY = 60.0  # seconds between two fetches when nothing says a token changed
RETRY_EVERY = 5.0  # seconds between two fetches while the table has never been loaded


class TokensUnavailable(Exception):
    """The master's API tokens could not be fetched now (one line)."""


@dataclass(frozen=True, slots=True)
class TokenChanges:
    """What a new copy changed, by token id (for the log: ids are public)."""

    made: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()  # no longer in the master's answer

    def __bool__(self) -> bool:
        return bool(self.made or self.revoked or self.gone)

    def __str__(self) -> str:
        parts = [
            f"{what}: {_ids(ids)}"
            for what, ids in (("made", self.made), ("revoked", self.revoked), ("gone", self.gone))
            if ids
        ]
        return "; ".join(parts)


def _ids(ids: tuple[str, ...], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


class TokenTable:
    """The master's API tokens as a gateway checks them (pure: no I/O)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._records: dict[str, ApiTokenEntry] | None = None  # None: never loaded
        self._clock = clock
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self._records is not None

    def replace(self, entries: Iterable[ApiTokenEntry]) -> TokenChanges:
        """The master's answer replaces the whole copy; what changed (nothing is said of
        the first copy)."""
        old, new = self._records, {entry.token_id: entry for entry in entries}
        self._records = new
        self.loads += 1
        if old is None:
            return TokenChanges()
        return TokenChanges(
            made=tuple(i for i in new if i not in old),
            revoked=tuple(
                i
                for i, entry in new.items()
                if entry.revoked_at is not None and i in old and old[i].revoked_at is None
            ),
            gone=tuple(i for i in old if i not in new),
        )

    def authenticate(self, text: str) -> Scope | None:
        """The scope of the API token ``text``; None if it is malformed, unknown, wrong,
        expired or revoked, or if the table was never loaded. The master's check."""
        records = self._records
        if records is None:
            return None
        return authenticate_api_token(text, records.get, datetime.fromtimestamp(self._clock(), UTC))

    def __len__(self) -> int:
        return 0 if self._records is None else len(self._records)


Fetch = Callable[[], Awaitable[list[ApiTokenEntry]]]
"""The master's API tokens, or TokensUnavailable."""


def bus_fetch(bus: Bus, subjects: Subjects, who: str, timeout: float) -> Fetch:
    """Fetch the tokens with an ``ApiTokens`` request to the master over ``bus``."""

    async def fetch() -> list[ApiTokenEntry]:
        call = encode_call(ForwardedCall(who, b"", b""))
        try:
            reply = decode_reply(await bus.request(subjects.rpc("ApiTokens"), call, timeout))
            if not reply.ok:
                raise TokensUnavailable(f"the master refused: {reply.details}")
            return decode_api_tokens(reply.payload)
        except (BusUnavailable, BusDecodeError) as exc:
            raise TokensUnavailable(str(exc)) from None

    return fetch


class TokenRefresher:
    """Keeps a ``TokenTable`` up to date with the master's tokens."""

    def __init__(
        self,
        table: TokenTable,
        fetch: Fetch,
        *,
        every: float = REFRESH_EVERY,
        retry: float = RETRY_EVERY,
    ) -> None:
        self.table = table
        self._fetch = fetch
        self._every = every
        self._retry = retry
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.failures = 0

    async def refresh(self) -> bool:
        """Fetch the tokens now; False (the last copy kept) when that failed."""
        try:
            entries = await self._fetch()
        except TokensUnavailable as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                kept = "the last copy is kept" if self.table.loaded else "every token is refused"
                log.warning("API tokens: cannot fetch them from the master (%s): %s", exc, kept)
            return False
        changes = self.table.replace(entries)
        if changes:
            log.info("API tokens: %d from the master (%s)", len(self.table), changes)
        elif self._failing or self.table.loads == 1:
            log.info("API tokens: %d from the master", len(self.table))
        self._failing = False
        return True

    def refresh_soon(self) -> None:
        """A token changed, or the master restarted: fetch again (once, however many
        events arrive meanwhile; again after a fetch that was under way)."""
        self._wanted.set()

    async def start(self) -> None:
        """The first fetch (the master may not answer yet), then the refreshes."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="api-tokens")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            wait = self._every if self.table.loaded else min(self._every, self._retry)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), wait)
            self._wanted.clear()
            await self.refresh()
