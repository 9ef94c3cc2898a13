"""AccessControl on a real SQLite store in tmp_path (a file: no sockets)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloudai.api.models import MAX_CSR_LENGTH, ApiTokenRequest, JoinRequest, JoinTokenRequest
from cloudai.master.access import AccessControl, join_command
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.security.tokens import (
    JoinRefused,
    Scope,
    hash_secret,
    parse_api_token,
    parse_join_token,
)
from cloudai.store import Store, StoreError, open_store

CA = "c0" * 32
PORT = 8443
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    opened: list[Store] = []

    def _open(name: str = "data") -> Store:
        store = open_store(None, tmp_path / name)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Callable[[str], Store]) -> Store:
    return open_("data")


@pytest.fixture
def access(store: Store, clock: Clock) -> AccessControl:
    return AccessControl(store, CA, lambda: PORT, clock)


async def loaded(store: Store, clock: Clock) -> AccessControl:
    """Another master on the same database, or this one after a restart."""
    other = AccessControl(store, CA, lambda: PORT, clock)
    await other.load()
    return other


# -- API tokens ------------------------------------------------------------------------


async def test_api_tokens_authenticate_with_their_scope(access: AccessControl) -> None:
    admin_info, admin = await access.create_api_token(Scope.ADMIN, "ops", None)
    read_info, read = await access.create_api_token(Scope.READ, "grafana", 3600)
    assert access.authenticate(admin) is Scope.ADMIN
    assert access.authenticate(read) is Scope.READ
    assert admin_info.scope is Scope.ADMIN and admin_info.name == "ops"
    assert admin_info.expires_at is None and admin_info.state == "active"
    assert read_info.created_at == T0 and read_info.expires_at == T0 + 3600
    assert parse_api_token(admin).token_id == admin_info.token_id


async def test_authenticate_refuses_what_is_not_a_valid_token(
    access: AccessControl, clock: Clock
) -> None:
    _info, text = await access.create_api_token(Scope.READ, "", 60)
    token = parse_api_token(text)
    assert access.authenticate("") is None
    assert access.authenticate("Bearer " + text) is None
    assert access.authenticate(f"cloudai.{token.token_id}.{'x' * 43}") is None  # wrong secret
    assert access.authenticate(f"cloudai.ffffffffffff.{token.secret}") is None  # unknown id
    clock.now += 59.9
    assert access.authenticate(text) is Scope.READ
    clock.now += 0.1
    assert access.authenticate(text) is None  # expired
    assert access.list_api_tokens()[0].state == "expired"


async def test_api_tokens_are_committed_and_revoked(
    access: AccessControl, store: Store, clock: Clock
) -> None:
    info, text = await access.create_api_token(Scope.ADMIN, "ci", None)
    (record,) = store.list_api_tokens()  # in the database when create returned
    assert record.token_id == info.token_id
    assert record.secret_hash == hash_secret(parse_api_token(text).secret)
    assert text not in repr(record) and parse_api_token(text).secret not in repr(record)
    assert (await loaded(store, clock)).authenticate(text) is Scope.ADMIN  # after a restart

    clock.now += 5
    revoked = await access.revoke_api_token(info.token_id)
    assert revoked.state == "revoked" and revoked.revoked_at == T0 + 5
    assert access.authenticate(text) is None
    assert store.list_api_tokens()[0].revoked_at is not None
    assert (await loaded(store, clock)).authenticate(text) is None
    assert [t.token_id for t in access.list_api_tokens()] == [info.token_id]
    with pytest.raises(AdminError) as error:
        await access.revoke_api_token("ffffffffffff")
    assert error.value.kind is ErrorKind.NOT_FOUND


async def test_a_failed_write_leaves_no_token(
    access: AccessControl, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise StoreError("database error: disk I/O error")

    monkeypatch.setattr(store, "add_api_token", broken)
    monkeypatch.setattr(store, "add_join_token", broken)
    with pytest.raises(StoreError):
        await access.create_api_token(Scope.ADMIN, "", None)
    with pytest.raises(StoreError):
        await access.create_join_token(None, None, None)
    assert access.list_api_tokens() == []
    assert access.list_join_tokens() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.create_api_token("root", "", None), "scope must be one of read, admin"),
        (lambda a: a.create_api_token(Scope.READ, "", 0), "ttl must be a positive number"),
        (lambda a: a.create_api_token(Scope.READ, "", float("nan")), "ttl must be a positive"),
        (lambda a: a.create_api_token(Scope.READ, "", 1e300), "too long"),
        (lambda a: a.create_join_token(-1, None, None), "ttl must be a positive number"),
        (lambda a: a.create_join_token(None, 0, None), "uses must be at least 1"),
        (lambda a: a.create_join_token(None, None, "bad id"), "invalid characters"),
    ],
)
async def test_invalid_requests_are_refused(
    access: AccessControl, call: Callable[[AccessControl], Awaitable[object]], message: str
) -> None:
    with pytest.raises(AdminError, match=message) as error:
        await call(access)
    assert error.value.kind is ErrorKind.INVALID


# -- join tokens -------------------------------------------------------------------------


async def test_create_join_token(access: AccessControl, store: Store) -> None:
    info, text = await access.create_join_token(600, 2, "gpu-7", "rack 4")
    token = parse_join_token(text)
    assert token.ca_fingerprint == CA and token.join_port == PORT
    assert token.token_id == info.token_id
    assert info.model_dump() == {
        "token_id": token.token_id,
        "created_at": T0,
        "expires_at": T0 + 600,
        "uses": 0,
        "max_uses": 2,
        "worker_id": "gpu-7",
        "revoked_at": None,
        "description": "rack 4",
        "state": "active",
    }
    (record,) = store.list_join_tokens()
    assert record.secret_hash == hash_secret(token.secret)
    assert access.list_join_tokens() == [info]


async def test_redeem_spends_uses_and_commits_them(
    access: AccessControl, store: Store, clock: Clock
) -> None:
    _info, text = await access.create_join_token(None, 2, None)
    await access.redeem_join_token(text, "gpu-1")
    assert store.list_join_tokens()[0].uses == 1  # written when redeem returned
    await access.redeem_join_token(text, "gpu-2")
    with pytest.raises(JoinRefused, match="has been used 2 of 2 times") as refused:
        await access.redeem_join_token(text, "gpu-3")
    assert refused.value.reason == "used_up"
    (listed,) = access.list_join_tokens()
    assert listed.uses == 2 and listed.state == "used up"
    assert (await loaded(store, clock)).list_join_tokens() == [listed]


@pytest.mark.parametrize(
    ("create", "worker_id", "advance", "reason", "message"),
    [
        ((60, None, None), "w", 60, "expired", "expired at 2027-01-15 08:01:00 UTC"),
        ((None, None, "gpu-7"), "gpu-8", 0, "wrong_worker", "is for worker 'gpu-7', not 'gpu-8'"),
    ],
)
async def test_redeem_refusals(
    access: AccessControl,
    clock: Clock,
    create: tuple[float | None, int | None, str | None],
    worker_id: str,
    advance: float,
    reason: str,
    message: str,
) -> None:
    _, text = await access.create_join_token(*create)
    clock.now += advance
    with pytest.raises(JoinRefused, match=message) as refused:
        await access.redeem_join_token(text, worker_id)
    assert refused.value.reason == reason


async def test_a_revoked_join_token_admits_nobody(access: AccessControl, clock: Clock) -> None:
    info, text = await access.create_join_token(None, None, None)
    clock.now += 30
    revoked = await access.revoke_join_token(info.token_id)
    assert revoked.state == "revoked" and revoked.revoked_at == T0 + 30
    with pytest.raises(JoinRefused, match="was revoked at 2027-01-15 08:00:30 UTC") as refused:
        await access.redeem_join_token(text, "w")
    assert refused.value.reason == "revoked"
    with pytest.raises(AdminError) as error:
        await access.revoke_join_token("ffffffffffff")
    assert error.value.kind is ErrorKind.NOT_FOUND


async def test_unknown_join_tokens_are_not_told_apart(access: AccessControl) -> None:
    _info, text = await access.create_join_token(None, None, None)
    token = parse_join_token(text)
    other_ca = text.replace(CA, "d1" * 32)
    wrong_secret = text.replace(token.secret, "x" * 43)
    unknown_id = text.replace(token.token_id, "ffffffffffff")
    cases = {
        "cloudai.0123456789ab.xxxxxxxxxxxxxxxxxxxxxxxx": "not a join token",
        other_ca: "another cluster",
        wrong_secret: f"join token {token.token_id} is not known",
        unknown_id: "join token ffffffffffff is not known",
    }
    for bad, message in cases.items():
        with pytest.raises(JoinRefused, match=message) as refused:
            await access.redeem_join_token(bad, "w")
        assert refused.value.reason == "unknown"
    assert access.list_join_tokens()[0].uses == 0


async def test_concurrent_joins_never_exceed_the_uses(access: AccessControl) -> None:
    _, text = await access.create_join_token(None, 3, None)
    outcomes = await asyncio.gather(
        *(access.redeem_join_token(text, f"w{i}") for i in range(8)), return_exceptions=True
    )
    assert outcomes.count(None) == 3
    refusals = [o for o in outcomes if isinstance(o, JoinRefused)]
    assert [r.reason for r in refusals] == ["used_up"] * 5
    assert access.list_join_tokens()[0].uses == 3


async def test_two_masters_on_one_database(
    access: AccessControl, store: Store, clock: Clock
) -> None:
    other = await loaded(store, clock)
    _, text = await access.create_join_token(None, 1, None)  # unknown to `other`'s memory
    await other.redeem_join_token(text, "w1")  # found in the store
    with pytest.raises(JoinRefused, match="used 1 of 1 times"):
        await access.redeem_join_token(text, "w2")  # memory said 0 uses: the store decides
    assert access.list_join_tokens()[0].uses == 1  # and memory learnt it


# -- the bootstrap token -------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_bootstrap_token_is_made_once(
    access: AccessControl, store: Store, clock: Clock, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "admin.token"
    await access.ensure_bootstrap_token(path)
    text = path.read_text().strip()
    assert mode(path) == 0o600
    assert access.authenticate(text) is Scope.ADMIN
    assert [t.name for t in access.list_api_tokens()] == ["bootstrap"]

    restarted = await loaded(store, clock)
    await restarted.ensure_bootstrap_token(path)  # known: kept
    assert path.read_text().strip() == text
    assert len(restarted.list_api_tokens()) == 1


async def test_bootstrap_token_is_replaced_when_the_database_does_not_know_it(
    access: AccessControl, open_: Callable[[str], Store], clock: Clock, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "admin.token"
    await access.ensure_bootstrap_token(path)
    old = path.read_text().strip()

    fresh = await loaded(open_("new-database"), clock)
    await fresh.ensure_bootstrap_token(path)
    new = path.read_text().strip()
    assert new != old
    assert fresh.authenticate(new) is Scope.ADMIN and fresh.authenticate(old) is None
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


async def test_bootstrap_token_file_with_garbage_or_loose_mode(
    access: AccessControl, tmp_path: Path
) -> None:
    path = tmp_path / "admin.token"
    path.write_text("not a token\n")
    os.chmod(path, 0o644)
    await access.ensure_bootstrap_token(path)
    text = path.read_text().strip()
    assert access.authenticate(text) is Scope.ADMIN
    assert mode(path) == 0o600

    os.chmod(path, 0o644)  # someone loosened it: kept, and tightened
    await access.ensure_bootstrap_token(path)
    assert path.read_text().strip() == text
    assert mode(path) == 0o600


async def test_a_revoked_bootstrap_token_is_replaced(access: AccessControl, tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    await access.ensure_bootstrap_token(path)
    (info,) = access.list_api_tokens()
    await access.revoke_api_token(info.token_id)
    await access.ensure_bootstrap_token(path)
    assert access.authenticate(path.read_text().strip()) is Scope.ADMIN


def test_join_command() -> None:
    assert join_command("T", "10.0.0.1:50051") == "cloudai worker --master 10.0.0.1:50051 --join T"
    assert join_command("T", "m:1", "gpu 7").endswith("--join T --id 'gpu 7'")


# -- the request models ----------------------------------------------------------------------


def test_join_token_request() -> None:
    assert JoinTokenRequest.model_validate_json("{}") == JoinTokenRequest()
    full = JoinTokenRequest.model_validate_json(
        '{"ttl_seconds": 3600, "uses": 1, "worker_id": "gpu-7", "description": "rack 4"}'
    )
    assert (full.ttl_seconds, full.uses, full.worker_id) == (3600.0, 1, "gpu-7")
    for body in (
        '{"ttl_seconds": 0}',
        '{"uses": 0}',
        '{"uses": "2"}',
        '{"worker_id": "bad id"}',
        '{"token": "x"}',
    ):
        with pytest.raises(ValidationError):
            JoinTokenRequest.model_validate_json(body)


def test_api_token_request() -> None:
    request = ApiTokenRequest.model_validate_json('{"scope": "read", "name": "grafana"}')
    assert request.scope is Scope.READ and request.ttl_seconds is None
    assert ApiTokenRequest.model_validate({"scope": "admin"}).scope is Scope.ADMIN
    for body in ('{"scope": "root"}', "{}", '{"scope": "read", "ttl_seconds": -1}'):
        with pytest.raises(ValidationError):
            ApiTokenRequest.model_validate_json(body)


def test_join_request_limits_the_csr() -> None:
    ok = JoinRequest(token="t", worker_id="w1", csr_pem="x" * MAX_CSR_LENGTH)
    assert ok.worker_id == "w1"
    with pytest.raises(ValidationError):
        JoinRequest(token="t", worker_id="w1", csr_pem="x" * (MAX_CSR_LENGTH + 1))
    with pytest.raises(ValidationError):
        JoinRequest(token="t", worker_id="", csr_pem="x")
