"""The store's behaviour, the same on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect

from cloudai.store import (
    AssignmentRecord,
    DuplicateError,
    NotFoundError,
    ResultRecord,
    SqlStore,
    Store,
    TaskRecord,
    WorkerRecord,
)
from cloudai.store.migrate import current_revision, head_revision

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def worker(worker_id: str = "w1", **kw: object) -> WorkerRecord:
    fields: dict[str, object] = {
        "address": "10.0.0.1:50052",
        "total_cpu": 8.0,
        "total_memory": 32.0,
        "total_storage": 500.0,
        "total_gpu": 1.0,
        "registered_at": T0,
        "updated_at": T0,
    }
    fields.update(kw)
    return WorkerRecord(worker_id, **fields)  # type: ignore[arg-type]


def task(task_id: str = "t1", target: str = "w1", **kw: object) -> TaskRecord:
    fields: dict[str, object] = {"docker_image": "alpine:3", "submitted_at": T0}
    fields.update(kw)
    return TaskRecord(task_id, target, **fields)  # type: ignore[arg-type]


def result(task_id: str = "t1", **kw: object) -> ResultRecord:
    fields: dict[str, object] = {
        "worker_id": "w1",
        "status": "success",
        "logs": "hello\n",
        "exit_code": 0,
        "result_location": "file:///tmp/out",
        "received_at": at(5),
    }
    fields.update(kw)
    return ResultRecord(task_id, **fields)  # type: ignore[arg-type]


# -- migrations ------------------------------------------------------------------------


def test_migrations_create_the_schema_from_empty(store: Store) -> None:
    assert isinstance(store, SqlStore)
    names = set(inspect(store.engine).get_table_names())
    assert {"workers", "tasks", "assignments", "results", "alembic_version"} <= names
    with store.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    assert store.schema_revision == head_revision()


def test_reopen_is_idempotent(open_: Callable[[], Store]) -> None:
    first = open_()
    first.upsert_worker(worker())
    first.close()
    for _ in range(2):
        again = open_()
        assert isinstance(again, SqlStore)
        assert again.schema_revision == head_revision()
        assert [w.worker_id for w in again.list_workers()] == ["w1"]
        again.close()


def test_two_stores_open_at_once(open_: Callable[[], Store]) -> None:
    """Two masters starting together: both migrate/verify, neither fails."""
    with ThreadPoolExecutor(2) as pool:
        stores = list(pool.map(lambda _: open_(), range(2)))
    stores[0].upsert_worker(worker())
    assert stores[1].get_worker("w1") is not None


# -- workers ---------------------------------------------------------------------------


def test_worker_crud(store: Store) -> None:
    assert store.get_worker("w1") is None
    store.upsert_worker(worker())
    got = store.get_worker("w1")
    assert got == worker()

    # re-registration: new address and resources; registered_at and heartbeat kept
    store.record_heartbeats({"w1": at(1)})
    store.upsert_worker(
        worker(address="10.0.0.9:1", total_cpu=16.0, registered_at=at(100), updated_at=at(100))
    )
    got = store.get_worker("w1")
    assert got is not None
    assert got.address == "10.0.0.9:1"
    assert got.total_cpu == 16.0
    assert got.registered_at == T0
    assert got.updated_at == at(100)
    assert got.last_heartbeat == at(1)

    assert store.set_worker_active("w1", False) is True
    got = store.get_worker("w1")
    assert got is not None and got.is_active is False
    assert store.set_worker_active("nope", True) is False

    store.upsert_worker(worker("w0"))
    assert [w.worker_id for w in store.list_workers()] == ["w0", "w1"]
    assert store.delete_worker("w1") is True
    assert store.delete_worker("w1") is False
    assert [w.worker_id for w in store.list_workers()] == ["w0"]


def test_upsert_workers_in_one_batch(store: Store) -> None:
    store.upsert_worker(worker("w1", registered_at=at(1), updated_at=at(1)))
    store.record_heartbeats({"w1": at(5)})
    store.upsert_workers(
        [
            worker("w2", address="10.0.0.2:1"),
            worker("w1", address="10.0.0.1:1", registered_at=at(9), updated_at=at(9)),
            worker("w2", address="10.0.0.2:2"),  # the same worker twice: the last wins
        ]
    )
    store.upsert_workers([])  # nothing to do
    workers = {w.worker_id: w for w in store.list_workers()}
    assert workers["w2"].address == "10.0.0.2:2"
    assert workers["w1"].address == "10.0.0.1:1"
    assert workers["w1"].registered_at == at(1)  # an update keeps it, as upsert_worker does
    assert workers["w1"].last_heartbeat == at(5)


def test_heartbeat_times_of_many_workers_in_one_batch(store: Store) -> None:
    store.upsert_workers([worker(f"w{i:04d}", is_active=False) for i in range(1500)])
    store.record_heartbeats({f"w{i:04d}": at(10) for i in range(1500)})
    # Times only move forward; an unknown worker is no row to write; any time zone.
    plus_two = timezone(timedelta(hours=2))
    store.record_heartbeats(
        {
            "w0000": at(5),  # older than what is stored: kept
            "w0001": at(20).astimezone(plus_two),
            "w0002": datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC),  # no microseconds
            "nobody": at(99),
        }
    )
    workers = {w.worker_id: w for w in store.list_workers()}
    assert "nobody" not in workers
    assert workers["w0000"].last_heartbeat == at(10)
    assert workers["w0001"].last_heartbeat == at(20)
    assert workers["w0002"].last_heartbeat == datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)
    assert workers["w1499"].last_heartbeat == at(10)
    assert all(w.is_active for w in workers.values())
    store.record_heartbeats({})  # nothing to do


def test_workers_survive_a_master_restart(open_: Callable[[], Store]) -> None:
    before = open_()
    for i in range(3):
        before.upsert_worker(worker(f"w{i}", address=f"10.0.0.{i}:50052", is_active=i == 1))
    before.record_heartbeats({"w1": at(7)})
    before.close()

    after = open_()
    workers = after.list_workers()
    assert [w.worker_id for w in workers] == ["w0", "w1", "w2"]
    assert [w.address for w in workers] == ["10.0.0.0:50052", "10.0.0.1:50052", "10.0.0.2:50052"]
    assert workers[1].last_heartbeat == at(7)
    assert workers[1].is_active is True
    assert workers[0].last_heartbeat is None


def test_record_heartbeats_batch(store: Store) -> None:
    for i in range(50):
        store.upsert_worker(worker(f"w{i:02d}"))
    beats = {f"w{i:02d}": at(i) for i in range(50)}
    beats["unknown"] = at(1)  # not registered: ignored
    store.record_heartbeats(beats)
    workers = {w.worker_id: w for w in store.list_workers()}
    assert "unknown" not in workers
    for i in range(50):
        w = workers[f"w{i:02d}"]
        assert w.last_heartbeat == at(i)
        assert w.is_active is True

    # an older time does not move the heartbeat back; a newer one does
    store.record_heartbeats({"w10": at(1), "w11": at(100)})
    assert store.get_worker("w10").last_heartbeat == at(10)  # type: ignore[union-attr]
    assert store.get_worker("w11").last_heartbeat == at(100)  # type: ignore[union-attr]
    store.record_heartbeats({})  # nothing to do

    # a later time in another zone, a microsecond apart, is newer; naive times are refused
    later = at(100) + timedelta(microseconds=1)
    store.record_heartbeats({"w11": later.astimezone(timezone(timedelta(hours=2)))})
    assert store.get_worker("w11").last_heartbeat == later  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="naive"):
        store.record_heartbeats({"w11": datetime(2025, 1, 1)})


def test_timestamps_are_utc_aware(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2025, 3, 1, 14, 0, tzinfo=plus2)
    store.upsert_worker(worker(registered_at=local, updated_at=local))
    got = store.get_worker("w1")
    assert got is not None
    assert got.registered_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert got.registered_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        store.upsert_worker(worker("w2", registered_at=datetime(2025, 1, 1)))


# -- tasks, assignments, results ---------------------------------------------------------


def test_task_lifecycle(store: Store) -> None:
    store.add_task(task(command="echo hi", req_cpu=0.5, req_memory=1.0, req_gpu=1.0))
    with pytest.raises(DuplicateError):
        store.add_task(task())
    with pytest.raises(ValueError, match="status"):
        store.add_task(task("t2", status="bogus"))

    assert store.update_task("t1", status="assigned", message="accepted") is True
    assert store.update_task("t1", status="running", started_at=at(1)) is True
    got = store.get_task("t1")
    assert got is not None
    assert (got.status, got.message, got.started_at, got.finished_at) == (
        "running",
        "accepted",
        at(1),
        None,
    )
    assert got.command == "echo hi" and got.req_gpu == 1.0

    assert store.update_task("t1", status="success", finished_at=at(9)) is True
    assert store.get_task("t1").finished_at == at(9)  # type: ignore[union-attr]
    assert store.update_task("nope", status="running") is False
    assert store.update_task("t1") is True
    assert store.update_task("nope") is False
    with pytest.raises(ValueError, match="status"):
        store.update_task("t1", status="done")
    assert store.get_task("nope") is None


def test_list_tasks_filters(store: Store) -> None:
    specs = [
        ("t1", "w1", "queued"),
        ("t2", "w1", "running"),
        ("t3", "w2", "running"),
        ("t4", "w2", "success"),
        ("t5", "w1", "failure"),
    ]
    for i, (task_id, target, status) in enumerate(specs):
        store.add_task(task(task_id, target, status=status, submitted_at=at(i)))

    def ids(tasks: list[TaskRecord]) -> list[str]:
        return [t.task_id for t in tasks]

    assert ids(store.list_tasks()) == ["t5", "t4", "t3", "t2", "t1"]  # newest first
    assert ids(store.list_tasks(status="running")) == ["t3", "t2"]
    assert ids(store.list_tasks(status=["success", "failure"])) == ["t5", "t4"]
    assert ids(store.list_tasks(worker_id="w1")) == ["t5", "t2", "t1"]
    assert ids(store.list_tasks(status="running", worker_id="w2")) == ["t3"]
    assert ids(store.list_tasks(limit=2)) == ["t5", "t4"]
    assert ids(store.list_tasks(limit=None)) == ["t5", "t4", "t3", "t2", "t1"]
    assert store.list_tasks(status="cancelled") == []
    assert store.list_tasks(status=[]) == []
    assert store.count_tasks() == {"queued": 1, "running": 2, "success": 1, "failure": 1}


def test_assignments(store: Store) -> None:
    store.add_task(task())
    first = AssignmentRecord("t1", "w1", acknowledged=False, message="busy", assigned_at=at(1))
    first_id = store.add_assignment(first)
    assert first.id == first_id
    second_id = store.add_assignment(AssignmentRecord("t1", "w1", True, "", at(2)))
    assert second_id > first_id
    got = store.list_assignments("t1")
    assert [(a.id, a.acknowledged, a.message, a.assigned_at) for a in got] == [
        (first_id, False, "busy", at(1)),
        (second_id, True, "", at(2)),
    ]
    with pytest.raises(NotFoundError):
        store.add_assignment(AssignmentRecord("nope", "w1"))
    assert store.list_assignments("nope") == []


def test_results_and_duplicate_delivery(store: Store) -> None:
    store.add_task(task())
    logs = "line ✓ ünïcode\n" * 20_000  # ~0.3 MB
    assert store.save_result(result(logs=logs, logs_truncated=True)) is True
    # The worker retries the delivery: accepted, nothing changes, nothing fails.
    assert store.save_result(result(logs="other", status="failure", exit_code=1)) is False
    got = store.get_result("t1")
    assert got == result(logs=logs, logs_truncated=True)
    assert store.get_result("nope") is None
    with pytest.raises(NotFoundError):
        store.save_result(result("nope"))
    with pytest.raises(ValueError, match="status"):
        store.save_result(result(status="running"))


def test_concurrent_duplicate_deliveries(store: Store) -> None:
    store.add_task(task())
    barrier = threading.Barrier(8)

    def deliver(_: int) -> bool:
        barrier.wait()
        return store.save_result(result())

    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(deliver, range(8)))
    assert stored.count(True) == 1
    assert store.get_result("t1") == result()


def test_tasks_assignments_results_survive_a_master_restart(open_: Callable[[], Store]) -> None:
    before = open_()
    before.upsert_worker(worker())
    before.add_task(task("t1", status="success", started_at=at(1), finished_at=at(4)))
    before.add_task(task("t2", command="sleep 100", docker_image="", submitted_at=at(2)))
    before.update_task("t2", status="running", started_at=at(3))
    before.add_assignment(AssignmentRecord("t1", "w1", True, "ok", at(1)))
    before.save_result(result("t1", exit_code=0, logs="done\n"))
    before.close()

    after = open_()
    assert after.get_worker("w1") == worker()
    t1 = after.get_task("t1")
    assert t1 is not None and (t1.status, t1.started_at, t1.finished_at) == (
        "success",
        at(1),
        at(4),
    )
    t2 = after.get_task("t2")
    assert t2 is not None and (t2.status, t2.command, t2.docker_image) == (
        "running",
        "sleep 100",
        "",
    )
    assert [(a.worker_id, a.message) for a in after.list_assignments("t1")] == [("w1", "ok")]
    assert after.get_result("t1") == result("t1", exit_code=0, logs="done\n")
    assert [t.task_id for t in after.list_tasks(status="running")] == ["t2"]


def test_deleting_a_worker_keeps_its_tasks(store: Store) -> None:
    store.upsert_worker(worker())
    store.add_task(task())
    store.save_result(result())
    assert store.delete_worker("w1") is True
    assert store.get_task("t1") is not None
    assert store.get_result("t1") is not None


def test_concurrent_use_from_threads(store: Store) -> None:
    """The master calls the store from asyncio.to_thread: many threads at once."""
    for i in range(8):
        store.upsert_worker(worker(f"w{i}"))

    def work(i: int) -> None:
        for j in range(10):
            store.add_task(task(f"t{i}-{j}", f"w{i}", submitted_at=at(j)))
            store.record_heartbeats({f"w{k}": at(i * 10 + j) for k in range(8)})
            store.list_tasks(worker_id=f"w{i}", limit=5)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert sum(store.count_tasks().values()) == 80
    assert all(w.last_heartbeat == at(79) for w in store.list_workers())


def test_closed_store_refuses_calls(open_: Callable[[], Store]) -> None:
    from cloudai.store import StoreError

    store = open_()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.list_workers()
