"""A gateway's copy of the master's API tokens (gateway/tokens.py): the table checks a
token as the master does (read, admin, revoked, expired, unknown, wrong secret), refuses
everything until it is loaded, is fetched over the bus from the master's BusIngest
(an in-memory bus, a real AccessControl on SQLite in tmp_path: no sockets), again when
the master says a token changed or it restarted, and every interval; a failed fetch
keeps the last copy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloudai.bus.codec import (
    ApiTokenEntry,
    SessionEvent,
    decode_api_tokens,
    encode_api_tokens,
    encode_session_event,
)
from cloudai.bus.subjects import Subjects
from cloudai.gateway.server import GatewayServer
from cloudai.gateway.service import GatewayService
from cloudai.gateway.sessions import SessionCache
from cloudai.gateway.settings import GatewaySettings
from cloudai.gateway.tokens import (
    TokenChanges,
    TokenRefresher,
    TokensUnavailable,
    TokenTable,
    bus_fetch,
)
from cloudai.master.access import AccessControl
from cloudai.master.bus_ingest import BusIngest
from cloudai.master.registry import WorkerRegistry
from cloudai.master.service import MasterService
from cloudai.proto import pb
from cloudai.security.tokens import Scope, format_api_token, hash_secret
from cloudai.store import Store, open_store
from cloudai.telemetry.manager import TelemetryManager
from tests.harness import async_wait_until
from tests.memory_bus import MemoryBus

T0 = 1_800_000_000.0
SECRET = "S3cr3t_with-dashes_and_underscores_0123456"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(None, tmp_path / "data")
    yield opened
    opened.close()


@pytest.fixture
def access(store: Store, clock: Clock) -> AccessControl:
    return AccessControl(store, "c0" * 32, lambda: 8443, clock)


class Results:
    async def record_result(self, result: pb.TaskResult) -> tuple[bool, str]:
        return False, "no tasks here"


async def master_on_bus(bus: MemoryBus, access: AccessControl | None) -> BusIngest:
    registry, telemetry = WorkerRegistry(), TelemetryManager(30.0)
    service = MasterService(registry, telemetry, Results())
    ingest = BusIngest(bus, Subjects(), registry, telemetry, service, None, access)
    await ingest.start()
    return ingest


def copy_of(access: AccessControl, clock: Clock) -> TokenTable:
    table = TokenTable(clock)
    table.replace(decode_api_tokens(encode_api_tokens(access.api_token_records())))
    return table


# -- the table -----------------------------------------------------------------------------


def test_a_table_never_loaded_refuses_every_token() -> None:
    table = TokenTable()
    entry = ApiTokenEntry("0123456789ab", hash_secret(SECRET), Scope.ADMIN)
    text = format_api_token(entry.token_id, SECRET)
    assert not table.loaded and table.authenticate(text) is None
    table.replace([entry])
    assert table.loaded and len(table) == 1 and table.authenticate(text) is Scope.ADMIN
    table.replace([])  # loaded, empty: still refused
    assert table.loaded and table.authenticate(text) is None


def test_a_new_copy_says_what_changed_by_token_id() -> None:
    table = TokenTable()
    a = ApiTokenEntry("aaaaaaaaaaaa", hash_secret(SECRET), Scope.READ)
    b = ApiTokenEntry("bbbbbbbbbbbb", hash_secret(SECRET), Scope.READ)
    assert not table.replace([a])  # the first copy: nothing to compare with
    changes = table.replace([a, b])
    assert changes == TokenChanges(made=("bbbbbbbbbbbb",))
    revoked = ApiTokenEntry(b.token_id, b.secret_hash, b.scope, revoked_at=datetime.now(UTC))
    assert table.replace([revoked]) == TokenChanges(
        revoked=("bbbbbbbbbbbb",), gone=("aaaaaaaaaaaa",)
    )
    assert not table.replace([revoked])
    assert str(TokenChanges(made=("a", "b"), gone=("c",))) == "made: a, b; gone: c"
    many = tuple(f"{i:012x}" for i in range(12))
    assert str(TokenChanges(revoked=many)).endswith(f"{many[9]} and 2 more")


async def test_the_table_checks_a_token_as_the_master_does(
    access: AccessControl, clock: Clock
) -> None:
    _, read = await access.create_api_token(Scope.READ, "grafana", None)
    _, admin = await access.create_api_token(Scope.ADMIN, "ops", None)
    _, short = await access.create_api_token(Scope.READ, "short", 60)
    revoked_info, revoked = await access.create_api_token(Scope.READ, "gone", None)
    await access.revoke_api_token(revoked_info.token_id)
    unknown = format_api_token("0123456789ab", SECRET)
    wrong_secret = read[: -len(SECRET)] + SECRET
    table = copy_of(access, clock)
    assert table.authenticate(read) is Scope.READ
    assert table.authenticate(admin) is Scope.ADMIN
    assert table.authenticate(short) is Scope.READ
    for refused in (revoked, unknown, wrong_secret, "", "cloudai.x.y", read + "x"):
        assert table.authenticate(refused) is None
    clock.now += 60  # the short one expires on the gateway's clock too
    assert table.authenticate(short) is None
    for text in (read, admin, short, revoked, unknown, wrong_secret):
        assert table.authenticate(text) == access.authenticate(text)


# -- fetched from the master -----------------------------------------------------------------


async def test_tokens_come_over_the_bus_and_follow_the_masters_changes(
    access: AccessControl,
) -> None:
    bus = MemoryBus()
    _, before = await access.create_api_token(Scope.READ, "before", None)
    ingest = await master_on_bus(bus, access)
    server = GatewayServer(GatewaySettings(insecure=True), bus)
    server.service = GatewayService("g1", bus, Subjects(), SessionCache())
    table = TokenTable()
    server.tokens = TokenRefresher(table, bus_fetch(bus, Subjects(), "gateway g1", 1.0))
    await bus.subscribe(Subjects().sessions, server._on_session_event)
    await server.tokens.start()
    try:
        assert table.authenticate(before) is Scope.READ
        info, made = await access.create_api_token(Scope.ADMIN, "made", None)
        assert ingest.stats.token_events == 1
        await async_wait_until(lambda: table.authenticate(made) is Scope.ADMIN, 5, "made")
        await access.revoke_api_token(info.token_id)
        await async_wait_until(lambda: table.authenticate(made) is None, 5, "revoked")
        assert table.authenticate(before) is Scope.READ
        # What went over the bus: hashes, never a token's text or secret.
        sent = b"".join(data for _, data in bus.published)
        for text in (before, made):
            assert text.rsplit(".", 1)[1].encode() not in sent
    finally:
        await server.tokens.stop()
        await ingest.stop()


async def test_an_insecure_master_has_no_tokens_to_give() -> None:
    bus = MemoryBus()
    ingest = await master_on_bus(bus, None)
    fetch = bus_fetch(bus, Subjects(), "gateway g1", 1.0)
    with pytest.raises(TokensUnavailable, match="--insecure"):
        await fetch()
    refresher = TokenRefresher(TokenTable(), fetch)
    assert not await refresher.refresh()
    assert not refresher.table.loaded and refresher.failures == 1
    await ingest.stop()


async def test_no_master_on_the_bus_leaves_every_token_refused() -> None:
    refresher = TokenRefresher(TokenTable(), bus_fetch(MemoryBus(), Subjects(), "g", 0.5))
    assert not await refresher.refresh()
    assert not refresher.table.loaded


class FakeMaster:
    """A fetch that answers with ``entries``, or fails while ``down``."""

    def __init__(self) -> None:
        self.entries = [ApiTokenEntry("0123456789ab", hash_secret(SECRET), Scope.READ)]
        self.down = False
        self.calls = 0

    async def __call__(self) -> list[ApiTokenEntry]:
        self.calls += 1
        if self.down:
            raise TokensUnavailable("nobody answers")
        return list(self.entries)


async def test_a_failed_refresh_keeps_the_last_copy() -> None:
    master = FakeMaster()
    refresher = TokenRefresher(TokenTable(), master)
    text = format_api_token("0123456789ab", SECRET)
    assert await refresher.refresh()
    master.down, master.entries = True, []
    assert not await refresher.refresh()
    assert refresher.table.authenticate(text) is Scope.READ
    master.down = False
    assert await refresher.refresh()
    assert refresher.table.authenticate(text) is None


async def test_the_table_is_fetched_again_every_interval_and_on_events() -> None:
    master = FakeMaster()
    refresher = TokenRefresher(TokenTable(), master, every=0.05)
    await refresher.start()
    try:
        await async_wait_until(lambda: master.calls >= 3, 5, "two periodic refreshes")
    finally:
        await refresher.stop()
    master = FakeMaster()
    refresher = TokenRefresher(TokenTable(), master, every=3600)
    await refresher.start()
    try:
        assert master.calls == 1
        refresher.refresh_soon()
        await async_wait_until(lambda: master.calls == 2, 5, "a refresh on an event")
    finally:
        await refresher.stop()


async def test_a_master_that_was_down_at_start_is_asked_again_soon() -> None:
    master = FakeMaster()
    master.down = True
    refresher = TokenRefresher(TokenTable(), master, every=3600, retry=0.05)
    await refresher.start()
    try:
        assert not refresher.table.loaded
        master.down = False
        await async_wait_until(lambda: refresher.table.loaded, 5, "loaded once the master answers")
    finally:
        await refresher.stop()


async def test_reset_and_tokens_events_refetch_and_others_do_not() -> None:
    bus, master = MemoryBus(), FakeMaster()
    server = GatewayServer(GatewaySettings(insecure=True), bus)
    server.service = GatewayService("g1", bus, Subjects(), SessionCache())
    server.tokens = TokenRefresher(TokenTable(), master, every=3600)
    await bus.subscribe(Subjects().sessions, server._on_session_event)
    await server.tokens.start()
    try:
        sessions = Subjects().sessions
        await bus.publish(sessions, encode_session_event(SessionEvent(reset="boot-2")))
        await async_wait_until(lambda: master.calls == 2, 5, "a refresh on reset")
        await bus.publish(sessions, encode_session_event(SessionEvent(tokens="0123456789ab")))
        await async_wait_until(lambda: master.calls == 3, 5, "a refresh on tokens")
        await bus.publish(sessions, encode_session_event(SessionEvent(forget="w1")))
        await bus.publish(sessions, b"garbage")
        assert server.service.stats.invalid_messages == 1
        assert not server.tokens._wanted.is_set() and master.calls == 3
    finally:
        await server.tokens.stop()
