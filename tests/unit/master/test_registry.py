from __future__ import annotations

import pytest

from cloudai.master.registry import RegistryError, WorkerRegistry
from cloudai.proto import pb


def test_unknown_worker_is_refused_with_the_admin_command() -> None:
    reg = WorkerRegistry()
    ok, message = reg.register(pb.WorkerInfo(worker_id="w1", worker_ip="10.0.0.5:50052"))
    assert not ok
    assert "register w1 10.0.0.5:50052" in message
    assert reg.refused_registrations == 1
    assert not reg.has_session("w1")


def test_known_worker_registers_and_updates_resources() -> None:
    reg = WorkerRegistry()
    reg.authorise("w1", "127.0.0.1:50052")
    ok, _ = reg.register(
        pb.WorkerInfo(worker_id="w1", worker_ip="127.0.0.1:6000", total_cpu=8, total_memory=16)
    )
    assert ok and reg.has_session("w1")
    entry = reg.get("w1")
    assert entry is not None
    assert (entry.address, entry.total_cpu, entry.total_memory) == ("127.0.0.1:6000", 8, 16)


def test_empty_worker_ip_keeps_the_admin_address() -> None:
    reg = WorkerRegistry()
    reg.authorise("w1", "192.168.1.9:50052")
    reg.register(pb.WorkerInfo(worker_id="w1", worker_ip=""))
    assert reg.get("w1").address == "192.168.1.9:50052"  # type: ignore[union-attr]


def test_authorise_validates_and_revoke() -> None:
    reg = WorkerRegistry()
    with pytest.raises(RegistryError):
        reg.authorise("w1", "no-port")
    with pytest.raises(RegistryError):
        reg.authorise("bad id", "1.2.3.4:5")
    changes: list[tuple[str, object]] = []
    reg.add_listener(lambda wid, e: changes.append((wid, e is not None)))
    reg.authorise("w1", "1.2.3.4:5")
    assert reg.revoke("w1") is True
    assert reg.revoke("w1") is False
    assert changes == [("w1", True), ("w1", False)]


def test_copies() -> None:
    reg = WorkerRegistry()
    reg.authorise("w1", "1.2.3.4:5")
    entry = reg.get("w1")
    assert entry is not None
    entry.address = "x"
    assert reg.get("w1").address == "1.2.3.4:5"  # type: ignore[union-attr]


def test_each_registration_opens_a_newer_session() -> None:
    reg = WorkerRegistry()
    reg.authorise("w1", "1.2.3.4:5")
    reg.authorise("w2")
    assert reg.session_of("w1") is None
    reg.register(pb.WorkerInfo(worker_id="w1"))
    first = reg.session_of("w1")
    reg.register(pb.WorkerInfo(worker_id="w2"))
    reg.register(pb.WorkerInfo(worker_id="w1"))
    second = reg.session_of("w1")
    assert first is not None and second is not None and second > first
    assert reg.session_of("w2") not in (None, first, second)
    reg.bind_certificate("w1", "ab" * 32)  # a new certificate: the worker registers again
    assert reg.session_of("w1") is None
    reg.revoke("w2")
    assert reg.session_of("w2") is None and reg.session_of("nobody") is None


def test_with_address_lists_the_workers_the_master_can_call() -> None:
    reg = WorkerRegistry()
    reg.authorise("admin-first", "1.2.3.4:5")
    reg.authorise("self-registering")
    reg.authorise("told-its-address")
    reg.register(pb.WorkerInfo(worker_id="told-its-address", worker_ip="10.0.0.7:50052"))
    assert sorted(reg.with_address()) == ["admin-first", "told-its-address"]
