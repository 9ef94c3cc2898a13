"""A gateway in secure mode: mutual TLS with workers, a gateway certificate from the
cluster CA (`cloudai gateway --issue-tls-dir`), and the master's identity rules applied
to the certificate each worker showed the gateway. A joined worker's heartbeats reach the
master through the gateway; another worker's certificate cannot act for it. The master
and the gateway reach NATS as users of their own (``--bus-nkey``) with the permissions
docs/SCALING.md lists, on a nats-server of this test."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloudai.proto import pb, rpc
from cloudai.security.pki import MASTER_DNS, identity, load_cert
from tests.bus_harness import NatsServer
from tests.harness import (
    admin_client,
    child_env,
    cloudai_command,
    start_master,
    start_process,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.integration


def worker_credentials(work_dir: Path) -> grpc.ChannelCredentials:
    tls = work_dir / "tls"
    return grpc.ssl_channel_credentials(
        root_certificates=(tls / "ca.pem").read_bytes(),
        private_key=(tls / "worker.key").read_bytes(),
        certificate_chain=(tls / "worker.pem").read_bytes(),
    )


async def test_workers_reach_a_secure_master_through_a_secure_gateway(
    tmp_path: Path,
    auth_bus: NatsServer,
    processes: list[Any],
) -> None:
    nkey = auth_bus.seeds
    master = start_master(
        tmp_path, "--bus", auth_bus.url, "--bus-nkey", str(nkey["master"]), secure=True
    )
    processes.append(master)
    tls_dir = tmp_path / "gateway-tls"
    await asyncio.to_thread(
        subprocess.run,
        cloudai_command(
            "gateway",
            "--issue-tls-dir",
            str(tls_dir),
            "--id",
            "g1",
            "--data-dir",
            str(tmp_path / "data"),
        ),
        check=True,
        env=child_env(),
        capture_output=True,
    )
    assert (tls_dir / "gateway.key").stat().st_mode & 0o077 == 0
    # The gateway's own role: workers take it as their server, never as their master.
    assert identity(load_cert((tls_dir / "gateway.pem").read_bytes())) == ("gateway", "g1")
    # Another gateway's certificate (g1's, run as g2): one line, exit 1, nothing served.
    wrong = await asyncio.to_thread(
        subprocess.run,
        cloudai_command(
            "gateway", "--id", "g2", "--bus", auth_bus.url, "--bus-nkey", str(nkey["gateway"]),
            "--host", "127.0.0.1", "--grpc-port", "0", "--tls-dir", str(tls_dir),
        ),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 1, wrong
    assert "gateway.pem is gateway 'g1''s certificate" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
    gateway = start_process(
        ["gateway", "--id", "g1", "--bus", auth_bus.url, "--bus-nkey", str(nkey["gateway"]),
         "--host", "127.0.0.1", "--grpc-port", "0", "--tls-dir", str(tls_dir)],
        tmp_path,
        "gateway",
    )  # fmt: skip
    processes.append(gateway)
    address = f"127.0.0.1:{gateway.ready['grpc_port']}"
    api = admin_client(master)
    for worker_id in ("w1", "w2"):
        token = api.create_join_token(uses=1, worker_id=worker_id).token
        processes.append(
            start_worker(tmp_path, worker_id, "--interval", "0.3", master=address, join=token)
        )

    def active(worker_id: str) -> bool:
        view = api.worker(worker_id).model_dump(mode="json")
        return bool(view.get("is_active") and view.get("memory_usage"))

    wait_until(lambda: active("w1") and active("w2"), 30, "w1 and w2 active through the gateway")
    assert "gateway g1 for" in master.log()
    # The registrations' answers came on g1's own inbox, the one its NATS user may read.
    assert "the master's answers to this gateway arrive on _INBOX.cloudai.gw.g1.>" in gateway.log()

    # w2's certificate, acting for w1 through the gateway: the master's rule refuses it.
    options = [("grpc.ssl_target_name_override", MASTER_DNS)]
    credentials = worker_credentials(tmp_path / "work-w2")
    async with grpc.aio.secure_channel(address, credentials, options) as channel:
        stub = rpc.MasterWorkerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendHeartbeat(pb.Heartbeat(worker_id="w1", cpu_usage=1.0), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as register:
            await stub.RegisterWorker(pb.WorkerInfo(worker_id="w1", total_cpu=1), timeout=10)
        assert register.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Its own id, with its own certificate: accepted.
        await stub.SendHeartbeat(pb.Heartbeat(worker_id="w2", cpu_usage=1.0), timeout=10)
    # No certificate at all: the TLS handshake fails at the gateway.
    plain = grpc.ssl_channel_credentials((tls_dir / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(address, plain, options) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await rpc.MasterWorkerStub(channel).SendHeartbeat(
                pb.Heartbeat(worker_id="w1"), timeout=5
            )
        assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
    assert active("w1")
