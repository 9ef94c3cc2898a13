"""Who a certificate says its holder is, and what a worker in secure mode answers a
caller that is not its master: a gateway's certificate is named as such and refused."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cloudai.proto import pb
from cloudai.security import pki
from cloudai.security.peers import PeerCertificates
from cloudai.worker.service import WorkerService


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """What the handlers use of a gRPC context: the peer's certificate, as gRPC gives it."""

    def __init__(self, cert_pem: bytes | None) -> None:
        self._cert = cert_pem

    def peer(self) -> str:
        return "ipv4:127.0.0.1:4711"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {} if self._cert is None else {"x509_pem_cert": [self._cert]}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


class Master:
    def __init__(self) -> None:
        self.addresses: list[str] = []

    @property
    def master_known(self) -> bool:
        return bool(self.addresses)

    def set_master(self, address: str) -> None:
        self.addresses.append(address)


class Tasks:
    def __init__(self) -> None:
        self.assigned: list[str] = []

    async def assign(self, task: pb.Task) -> tuple[bool, str]:
        self.assigned.append(task.task_id)
        return True, "accepted"


CA = pki.create_ca()
GATEWAY = pki.issue_gateway(CA, "g1", ["gw.example"])
MASTER = pki.issue_master(CA, ["localhost"])


def test_a_gateway_peer_is_described_as_a_gateway() -> None:
    peers = PeerCertificates()
    gateway = peers.of(Context(GATEWAY.cert_pem))
    assert gateway is not None
    assert (gateway.role, gateway.gateway_id, gateway.worker_id) == ("gateway", "g1", None)
    assert gateway.describe() == "gateway 'g1'"
    master = peers.of(Context(MASTER.cert_pem))
    assert master is not None and master.describe() == "master"


def service() -> tuple[WorkerService, Master, Tasks]:
    master, tasks = Master(), Tasks()
    worker: Any = WorkerService("w1", tasks, master, master_only=True)  # type: ignore[arg-type]
    return worker, master, tasks


async def test_a_worker_refuses_a_gateway_certificate_and_names_it() -> None:
    worker, master, tasks = service()
    context: Any = Context(GATEWAY.cert_pem)
    forged = pb.MasterInfo(master_address="10.0.0.9:1")
    calls = [
        ("MasterRegister", worker.MasterRegister(forged, context)),
        ("AssignTask", worker.AssignTask(pb.Task(task_id="t1", command="true"), context)),
    ]
    for what, call in calls:
        with pytest.raises(Aborted) as refused:
            await call
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details == (
            f"{what} is taken only from this worker's master, "
            "not from the certificate of gateway 'g1'"
        )
        assert "\n" not in refused.value.details
    assert master.addresses == [] and tasks.assigned == []
    assert worker.refused_calls == 2


async def test_a_worker_still_takes_the_masters_certificate() -> None:
    worker, master, tasks = service()
    context: Any = Context(MASTER.cert_pem)
    ack = await worker.MasterRegister(pb.MasterInfo(master_address="10.0.0.9:1"), context)
    assert ack.success, ack.message
    assert (await worker.AssignTask(pb.Task(task_id="t1", command="true"), context)).success
    assert master.addresses == ["10.0.0.9:1"] and tasks.assigned == ["t1"]
    assert worker.refused_calls == 0
