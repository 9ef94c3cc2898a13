"""WorkerInfo.task_limits: kept by the registry, stored, and shown by the API and CLI."""

from __future__ import annotations

import pytest

from cloudai import views
from cloudai.master.cluster_admin import worker_model
from cloudai.master.persistence import worker_entry, worker_record
from cloudai.master.registry import WorkerRegistry
from cloudai.proto import pb


def registered(task_limits: str) -> WorkerRegistry:
    registry = WorkerRegistry()
    registry.authorise("w1", "127.0.0.1:50052")
    ok, _ = registry.register(
        pb.WorkerInfo(worker_id="w1", worker_ip="127.0.0.1:50052", task_limits=task_limits)
    )
    assert ok
    return registry


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("cgroup-v1", "cgroup-v1"),
        ("cgroup-v2", "cgroup-v2"),
        ("accounted", "accounted"),
        ("", ""),  # a Go worker, or one of an earlier version
        ("x" * 17, ""),  # longer than the store holds
        ("Cgroup V1\n", ""),  # not a word of ours
    ],
)
def test_the_registry_keeps_what_the_worker_said(sent: str, kept: str) -> None:
    entry = registered(sent).get("w1")
    assert entry is not None and entry.task_limits == kept


def test_task_limits_are_stored_and_shown() -> None:
    entry = registered("cgroup-v1").get("w1")
    assert entry is not None
    record = worker_record(entry)
    assert record.task_limits == "cgroup-v1"
    assert worker_entry(record).task_limits == "cgroup-v1"  # after a master restart
    view = worker_model(entry, None).model_dump(mode="json")
    assert view["task_limits"] == "cgroup-v1"
    text = views.render_text(views.worker_detail(view, 0.0), width=100)
    assert "Task limits" in text and "enforced (cgroup v1)" in text


@pytest.mark.parametrize(
    ("mode", "shown"),
    [
        ("cgroup-v2", "enforced (cgroup v2)"),
        ("accounted", "accounted, not enforced"),
        ("", "-"),
        (None, "-"),
        ("something-new", "something-new"),
    ],
)
def test_task_limits_text(mode: object, shown: str) -> None:
    assert views.task_limits_text(mode) == shown
