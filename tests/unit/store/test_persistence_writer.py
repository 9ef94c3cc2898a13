"""MasterPersistence's writer: ordered writes, worker upserts of a burst in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cloudai.master.persistence import MasterPersistence
from cloudai.master.registry import WorkerEntry
from cloudai.master.tasks import NotStored
from cloudai.store import StoreError, WorkerRecord, open_store
from cloudai.store.sql_store import SqlStore


class RecordingStore(SqlStore):
    """The real SQLite store, noting the worker writes it is asked for."""

    calls: list[tuple[str, list[str]]]

    def upsert_workers(self, records: Sequence[WorkerRecord]) -> None:
        self.calls.append(("upsert_workers", [r.worker_id for r in records]))
        super().upsert_workers(records)

    def upsert_worker(self, record: WorkerRecord) -> None:
        self.calls.append(("upsert_worker", [record.worker_id]))
        super().upsert_worker(record)

    def delete_worker(self, worker_id: str) -> bool:
        self.calls.append(("delete_worker", [worker_id]))
        return super().delete_worker(worker_id)


def entry(worker_id: str, address: str = "10.0.0.1:50052") -> WorkerEntry:
    return WorkerEntry(worker_id, address, registered_at=1.0, updated_at=1.0)


async def test_a_burst_of_upserts_is_one_batch_and_order_is_kept(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    assert isinstance(store, SqlStore)
    store.__class__ = RecordingStore
    store.calls = []  # type: ignore[attr-defined]
    persistence = MasterPersistence(store, heartbeat_flush_interval=1.0)
    # Queued before the writer starts: it finds them together, as after a burst.
    for i in range(5):
        persistence.on_worker_changed(f"w{i}", entry(f"w{i}"))
    persistence.on_worker_changed("w1", None)  # a delete between two bursts
    persistence.on_worker_changed("w1", entry("w1", "10.0.0.9:1"))
    persistence.on_worker_changed("w5", entry("w5"))
    persistence.start()
    await persistence.drain()
    assert store.calls == [  # type: ignore[attr-defined]
        ("upsert_workers", ["w0", "w1", "w2", "w3", "w4"]),
        ("delete_worker", ["w1"]),
        ("upsert_workers", ["w1", "w5"]),
    ]
    workers = {w.worker_id: w.address for w in store.list_workers()}
    assert workers == {f"w{i}": "10.0.0.1:50052" for i in (0, 2, 3, 4, 5)} | {"w1": "10.0.0.9:1"}

    persistence.on_worker_changed("w6", entry("w6"))  # alone: a plain upsert
    await persistence.drain()
    assert ("upsert_worker", ["w6"]) in store.calls[-2:]  # type: ignore[attr-defined]
    await persistence.stop()


class UnreachableStore(SqlStore):
    """The real SQLite store whose worker writes fail as if the server were gone."""

    def upsert_worker(self, record: WorkerRecord) -> None:
        raise StoreError("connection refused")


async def test_registry_committed_waits_for_the_writes_before_it(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    persistence = MasterPersistence(store, heartbeat_flush_interval=1.0)
    with pytest.raises(NotStored, match="writer is not running"):
        await persistence.registry_committed()
    persistence.start()
    persistence.on_worker_changed("w1", entry("w1"))
    await persistence.registry_committed()
    assert [w.worker_id for w in store.list_workers()] == ["w1"]  # committed before the answer
    await persistence.stop()


async def test_registry_committed_says_so_when_the_store_does_not_take_it(
    tmp_path: Path,
) -> None:
    store = open_store(None, tmp_path)
    assert isinstance(store, SqlStore)
    store.__class__ = UnreachableStore
    persistence = MasterPersistence(store, heartbeat_flush_interval=1.0)
    persistence.start()
    persistence.on_worker_changed("w1", entry("w1"))
    with pytest.raises(NotStored, match=r"did not commit it within 0.2 s \(\d+ failed"):
        await persistence.registry_committed(timeout=0.2)
    store.__class__ = SqlStore  # the server is back: the queued write goes through
    await persistence.registry_committed()
    assert [w.worker_id for w in store.list_workers()] == ["w1"]
    await persistence.stop()
