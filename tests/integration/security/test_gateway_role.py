"""A gateway's certificate (``cloudai gateway --issue-tls-dir``) against a real joined
worker: it carries the gateway role and a server-only key usage, so the worker's TLS
refuses it as a caller and its holder cannot assign tasks or register as the master; the
master's own certificate still can. (A gateway serving workers with this certificate:
tests/integration/test_gateway_secure.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from cloudai.proto import pb, rpc
from cloudai.security import pki
from tests.harness import admin_client, child_env, cloudai_command, start_master, start_worker

pytestmark = pytest.mark.integration

CALL_TIMEOUT = 10.0


def channel(address: str, ca_pem: bytes, key_pem: bytes, cert_pem: bytes) -> grpc.Channel:
    """To the worker at ``address``, checking its name, so that a failure is the worker
    refusing the caller, never the caller refusing the worker."""
    credentials = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
    options = [("grpc.ssl_target_name_override", pki.worker_dns_name("w1"))]
    return grpc.secure_channel(address, credentials, options)


def issue(tmp_path: Path, tls_dir: Path, gateway_id: str) -> subprocess.CompletedProcess[str]:
    """``cloudai gateway --issue-tls-dir`` on the master's data directory."""
    return subprocess.run(
        cloudai_command("gateway", "--issue-tls-dir", str(tls_dir), "--id", gateway_id,
                        "--data-dir", str(tmp_path / "data")),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_a_gateway_certificate_cannot_call_a_worker_as_the_master(tmp_path: Path) -> None:
    master = start_master(tmp_path, secure=True)
    worker = None
    try:
        tls_dir = tmp_path / "gateway-tls"
        # An id that breaks the id rule: one line, nothing written.
        bad = issue(tmp_path, tls_dir, "g 1")
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
        assert "gateway id 'g 1' has invalid characters" in bad.stderr
        assert not tls_dir.exists()

        issued = issue(tmp_path, tls_dir, "g1")
        assert issued.returncode == 0, issued.stderr
        assert "gateway 'g1'" in issued.stdout
        gateway_cert = (tls_dir / "gateway.pem").read_bytes()
        assert pki.identity(pki.load_cert(gateway_cert)) == ("gateway", "g1")

        token = admin_client(master).create_join_token(uses=1, worker_id="w1").token
        worker = start_worker(tmp_path, "w1", master=master.extra["grpc"], join=token)
        address = str(worker.extra["address"])
        ca_pem = Path(master.extra["ca_file"]).read_bytes()
        sentinel = tmp_path / "pwned"

        gateway = channel(address, ca_pem, (tls_dir / "gateway.key").read_bytes(), gateway_cert)
        with gateway:
            stub = rpc.MasterWorkerStub(gateway)
            forged = pb.MasterInfo(master_id="evil", master_address="127.0.0.1:9")
            calls = [
                (stub.AssignTask, pb.Task(task_id="gw-1", command=f"touch {sentinel}")),
                (stub.MasterRegister, forged),
            ]
            for call, request in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, timeout=CALL_TIMEOUT)
                # The worker's TLS refuses the certificate as a client's (no client-auth
                # key usage): the handshake fails before any handler runs.
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        assert not sentinel.exists()
        assert "gw-1" not in worker.log() and "127.0.0.1:9" not in worker.log()

        # The same worker, the same kind of channel, with the master's own certificate.
        tls = tmp_path / "data" / "tls"
        with channel(
            address, ca_pem, (tls / "master.key").read_bytes(), (tls / "master.pem").read_bytes()
        ) as trusted:
            stub = rpc.MasterWorkerStub(trusted)
            info = pb.MasterInfo(master_id="m", master_address=master.extra["grpc"])
            ack = stub.MasterRegister(info, timeout=CALL_TIMEOUT)
            assert ack.success, ack.message
            task = stub.AssignTask(pb.Task(task_id="m-1", command="true"), timeout=CALL_TIMEOUT)
            assert task.success, task.message
    finally:
        if worker is not None:
            worker.close()
        master.close()
