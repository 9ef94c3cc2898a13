"""Join tokens, API tokens and workers' certificate fingerprints in the store, the same on
SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect

from cloudai.master.persistence import worker_entry, worker_record
from cloudai.master.registry import WorkerEntry
from cloudai.security.tokens import (
    ApiTokenRecord,
    JoinRefused,
    JoinTokenRecord,
    Scope,
    hash_secret,
)
from cloudai.store import DuplicateError, NotFoundError, SqlStore, Store, WorkerRecord
from cloudai.store.migrate import alembic_config

T0 = datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=UTC)
HASH = hash_secret("a-secret-of-sixteen-chars")
FINGERPRINT = "ab" * 32


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def join_token(token_id: str = "3f2a9c1b7e44", /, **kw: object) -> JoinTokenRecord:
    fields: dict[str, object] = {"secret_hash": HASH, "created_at": T0}
    fields.update(kw)
    return JoinTokenRecord(token_id, **fields)  # type: ignore[arg-type]


def api_token(token_id: str = "0123456789ab", /, **kw: object) -> ApiTokenRecord:
    fields: dict[str, object] = {"secret_hash": HASH, "scope": Scope.READ, "created_at": T0}
    fields.update(kw)
    return ApiTokenRecord(token_id, **fields)  # type: ignore[arg-type]


# -- schema ----------------------------------------------------------------------------


def test_the_security_tables_exist(store: Store) -> None:
    assert isinstance(store, SqlStore)
    inspector = inspect(store.engine)
    assert {"join_tokens", "api_tokens"} <= set(inspector.get_table_names())
    columns = {c["name"]: c for c in inspector.get_columns("workers")}
    assert columns["cert_fingerprint"]["nullable"] is True


def test_upgrade_from_0001_keeps_the_workers(store: Store) -> None:
    assert isinstance(store, SqlStore)
    store.upsert_worker(WorkerRecord("w1", "10.0.0.1:1", registered_at=T0, updated_at=T0))
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    with store.engine.connect() as conn:
        assert not {"join_tokens", "api_tokens"} & set(conn.dialect.get_table_names(conn))
    with store.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    got = store.get_worker("w1")
    assert got is not None
    assert got.address == "10.0.0.1:1"
    assert got.cert_fingerprint is None


# -- workers' certificates ---------------------------------------------------------------


def test_cert_fingerprint_is_written_and_read_back(open_: Callable[[], Store]) -> None:
    store = open_()
    store.upsert_worker(WorkerRecord("w1", "", cert_fingerprint=FINGERPRINT))
    store.upsert_workers(
        [WorkerRecord("w2", ""), WorkerRecord("w3", "", cert_fingerprint="cd" * 32)]
    )
    store.close()
    again = open_()
    got = {w.worker_id: w.cert_fingerprint for w in again.list_workers()}
    assert got == {"w1": FINGERPRINT, "w2": None, "w3": "cd" * 32}
    # an upsert writes what the registry holds now: a new certificate, or none
    again.upsert_worker(WorkerRecord("w1", "", cert_fingerprint="ef" * 32))
    again.upsert_workers([WorkerRecord("w3", "")])
    assert again.get_worker("w1").cert_fingerprint == "ef" * 32  # type: ignore[union-attr]
    assert again.get_worker("w3").cert_fingerprint is None  # type: ignore[union-attr]


def test_the_master_maps_the_fingerprint_both_ways(store: Store) -> None:
    """The registry entry's certificate survives a trip through the store."""
    entry = WorkerEntry("w1", "", registered_at=1.5, updated_at=2.5, cert_fingerprint=FINGERPRINT)
    store.upsert_worker(worker_record(entry))
    got = store.get_worker("w1")
    assert got is not None and got.cert_fingerprint == FINGERPRINT
    assert worker_entry(got) == entry


# -- join tokens -------------------------------------------------------------------------


def test_join_tokens_are_added_listed_and_survive_a_restart(open_: Callable[[], Store]) -> None:
    store = open_()
    full = join_token(
        "bbbbbbbbbbbb",
        created_at=at(1),
        expires_at=at(3600),
        max_uses=3,
        worker_id="gpu-7",
        description="rack 4",
    )
    store.add_join_token(full)
    store.add_join_token(join_token("aaaaaaaaaaaa", created_at=at(2)))
    with pytest.raises(DuplicateError, match="aaaaaaaaaaaa"):
        store.add_join_token(join_token("aaaaaaaaaaaa"))
    store.close()

    again = open_()
    listed = again.list_join_tokens()
    assert [t.token_id for t in listed] == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]  # oldest first
    assert listed[0] == full
    assert listed[1] == join_token("aaaaaaaaaaaa", created_at=at(2))
    assert again.get_join_token("bbbbbbbbbbbb") == full
    assert again.get_join_token("cccccccccccc") is None


def test_use_join_token_counts_uses_up_to_the_limit(store: Store) -> None:
    store.add_join_token(join_token(max_uses=2))
    assert store.use_join_token("3f2a9c1b7e44", at(1)).uses == 1
    assert store.use_join_token("3f2a9c1b7e44", at(2), "any-worker").uses == 2
    with pytest.raises(JoinRefused, match="has been used 2 of 2 times") as refused:
        store.use_join_token("3f2a9c1b7e44", at(3))
    assert refused.value.reason == "used_up"
    assert store.get_join_token("3f2a9c1b7e44").uses == 2  # type: ignore[union-attr]


def test_use_join_token_without_a_limit(store: Store) -> None:
    store.add_join_token(join_token())
    for n in range(1, 4):
        assert store.use_join_token("3f2a9c1b7e44", at(n)).uses == n


@pytest.mark.parametrize(
    ("kw", "worker_id", "reason", "message"),
    [
        ({"expires_at": at(60)}, None, "expired", "expired at 2026-12-01 10:01:00 UTC"),
        ({"revoked_at": at(10)}, None, "revoked", "was revoked at 2026-12-01 10:00:10 UTC"),
        ({"worker_id": "gpu-7"}, "gpu-8", "wrong_worker", "is for worker 'gpu-7', not 'gpu-8'"),
    ],
)
def test_use_join_token_refusals(
    store: Store, kw: dict[str, object], worker_id: str | None, reason: str, message: str
) -> None:
    store.add_join_token(join_token(**kw))
    with pytest.raises(JoinRefused, match=message) as refused:
        store.use_join_token("3f2a9c1b7e44", at(60), worker_id)
    assert refused.value.reason == reason
    assert store.get_join_token("3f2a9c1b7e44").uses == 0  # type: ignore[union-attr]


def test_use_join_token_bound_to_a_worker(store: Store) -> None:
    store.add_join_token(join_token(worker_id="gpu-7"))
    assert store.use_join_token("3f2a9c1b7e44", at(1), "gpu-7").uses == 1
    assert store.use_join_token("3f2a9c1b7e44", at(1)).uses == 2  # no worker: not checked


def test_use_join_token_unknown_and_naive_time(store: Store) -> None:
    with pytest.raises(JoinRefused, match="join token 999999999999 is not known") as refused:
        store.use_join_token("999999999999", at(1))
    assert refused.value.reason == "unknown"
    store.add_join_token(join_token())
    with pytest.raises(ValueError, match="naive"):
        store.use_join_token("3f2a9c1b7e44", datetime(2026, 12, 1))


def test_concurrent_joins_never_exceed_max_uses(open_: Callable[[], Store]) -> None:
    """Two masters (two stores on one database), many joins at once: exactly max_uses win."""
    first, second = open_(), open_()
    first.add_join_token(join_token(max_uses=5))

    def join(n: int) -> int | str:
        store = first if n % 2 else second
        try:
            return store.use_join_token("3f2a9c1b7e44", at(1)).uses
        except JoinRefused as refused:
            return refused.reason

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(join, range(24)))
    assert sorted(o for o in outcomes if isinstance(o, int)) == [1, 2, 3, 4, 5]
    assert [o for o in outcomes if isinstance(o, str)] == ["used_up"] * 19
    assert first.get_join_token("3f2a9c1b7e44").uses == 5  # type: ignore[union-attr]


def test_revoke_join_token(store: Store) -> None:
    store.add_join_token(join_token())
    revoked = store.revoke_join_token("3f2a9c1b7e44", at(5))
    assert revoked.revoked_at == at(5)
    assert store.revoke_join_token("3f2a9c1b7e44", at(9)).revoked_at == at(5)  # the first time
    assert store.list_join_tokens() == [revoked]
    with pytest.raises(NotFoundError, match="999999999999"):
        store.revoke_join_token("999999999999", at(5))


# -- API tokens ------------------------------------------------------------------------


def test_api_tokens_are_added_listed_and_survive_a_restart(open_: Callable[[], Store]) -> None:
    store = open_()
    admin = api_token("bbbbbbbbbbbb", scope=Scope.ADMIN, name="bootstrap", expires_at=at(60))
    store.add_api_token(admin)
    store.add_api_token(api_token("aaaaaaaaaaaa", created_at=at(1)))
    with pytest.raises(DuplicateError, match="bbbbbbbbbbbb"):
        store.add_api_token(api_token("bbbbbbbbbbbb"))
    store.close()

    listed = open_().list_api_tokens()
    assert listed == [admin, api_token("aaaaaaaaaaaa", created_at=at(1))]
    assert listed[0].scope is Scope.ADMIN
    assert listed[1].scope is Scope.READ


def test_revoke_api_token(store: Store) -> None:
    store.add_api_token(api_token())
    revoked = store.revoke_api_token("0123456789ab", at(5))
    assert revoked.revoked_at == at(5)
    assert revoked.scope is Scope.READ
    assert store.revoke_api_token("0123456789ab", at(9)).revoked_at == at(5)
    assert store.list_api_tokens() == [revoked]
    with pytest.raises(NotFoundError, match="999999999999"):
        store.revoke_api_token("999999999999", at(5))
