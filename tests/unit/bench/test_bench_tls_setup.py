"""``cloudai bench --tls``: settings, the local master's flags, and enrolment's pure parts
(join requests, checking the certificate a join answers with, the workers' files)."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import orjson
import pytest
from cryptography import x509

from cloudai.api.models import JoinRequest, JoinResponse, JoinTokenRequest
from cloudai.bench import cli
from cloudai.bench.config import MAX_TLS_WORKERS, BenchConfig
from cloudai.bench.enrol import (
    MASTER_NAME,
    EnrolError,
    Enrolment,
    MasterAccess,
    WorkerTls,
    certificate_from,
    client_context,
    credential_file,
    join_body,
    join_token_body,
    read_admin_token,
    write_credential,
)
from cloudai.bench.local_master import LocalMaster
from cloudai.bench.report import table
from cloudai.bench.runner import status_url
from cloudai.security import pki


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


# -- settings -------------------------------------------------------------------------------


def test_plaintext_is_the_default_and_tls_a_flag() -> None:
    (plain,) = cli.configs_from_args(parse())
    (secure,) = cli.configs_from_args(parse("--tls", "--workers", "20"))
    assert plain.tls is False and secure.tls is True and secure.workers == 20


def test_tls_needs_our_own_master_and_a_connection_per_worker() -> None:
    BenchConfig(tls=True, workers=50, connections=50).validate()  # one per worker: fine
    with pytest.raises(ValueError, match="floor"):
        BenchConfig(tls=True, target="floor").validate()
    with pytest.raises(ValueError, match="--grpc"):
        BenchConfig(tls=True, grpc="10.0.0.1:50051").validate()
    with pytest.raises(ValueError, match="own connection"):
        cli.configs_from_args(parse("--tls", "--workers", "100", "--connections", "8"))
    with pytest.raises(ValueError, match="at most"):
        BenchConfig(tls=True, workers=MAX_TLS_WORKERS + 1).validate()
    BenchConfig(tls=False, workers=10_000, connections=8).validate()  # plaintext: any


def test_the_local_master_is_insecure_unless_secure(tmp_path: Path) -> None:
    plain = LocalMaster(tmp_path, ["bench-00000", "bench-00001"])
    command = plain.command()
    assert "--insecure" in command
    allow = Path(command[command.index("--allow-workers-file") + 1])
    assert allow.read_text() == "bench-00000\nbench-00001\n"
    plain.ready = {"grpc_port": 1, "http_port": 2}
    assert plain.ws_url == "ws://127.0.0.1:2/ws/telemetry"
    assert plain.http_base == "http://127.0.0.1:2"

    secure = LocalMaster(tmp_path / "s", ["bench-00000"], secure=True, extra_args=["--x"])
    command = secure.command()
    assert "--insecure" not in command and "--allow-workers-file" not in command
    assert command[-1] == "--x"  # the user's flags last
    secure.ready = {"grpc_port": 1, "http_port": 2}
    assert secure.ws_url == "wss://127.0.0.1:2/ws/telemetry"
    assert secure.http_base == "https://127.0.0.1:2"
    assert secure.ca_file == tmp_path / "s" / "data" / "tls" / "ca.pem"


def test_status_of_a_secure_master_is_read_over_https() -> None:
    assert status_url("wss://127.0.0.1:8443/ws/telemetry") == "https://127.0.0.1:8443/api/status"
    assert status_url("wss://[::1]/ws/telemetry") == "https://[::1]:443/api/status"


def test_records_say_whether_tls_was_on() -> None:
    base = {"mode": "stream", "workers": 1, "clients": 0, "offered_rate": 1.0}
    lines = table([{**base, "tls": True}, {**base, "tls": False}, base]).splitlines()
    assert lines[0].split()[:2] == ["mode", "tls"]
    assert [line.split()[1] for line in lines[2:]] == ["yes", "no", "-"]


# -- enrolment --------------------------------------------------------------------------------


def test_one_join_token_admits_exactly_the_workers() -> None:
    request = JoinTokenRequest.model_validate_json(join_token_body(250))
    assert request.uses == 250 and request.worker_id is None
    assert request.ttl_seconds is not None and request.ttl_seconds > 0


def test_a_join_request_carries_a_csr_for_the_worker() -> None:
    key = pki.new_key()
    request = JoinRequest.model_validate_json(join_body("TOKEN", "bench-00007", key))
    assert request.token == "TOKEN" and request.worker_id == "bench-00007"
    csr = x509.load_pem_x509_csr(request.csr_pem.encode())
    assert csr.is_signature_valid and csr.public_key() == key.public_key()
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloudai:worker:bench-00007" in names.get_values_for_type(x509.UniformResourceIdentifier)


def _answer(ca: pki.CertifiedKey, key: pki.PrivateKey, signed_for: str) -> bytes:
    cert = pki.sign_worker_csr(ca, pki.create_csr(key, signed_for), signed_for)
    return (
        JoinResponse(certificate_pem=pki.cert_pem(cert).decode(), ca_pem=ca.cert_pem.decode())
        .model_dump_json()
        .encode()
    )


def test_the_certificate_of_a_join_answer_is_checked() -> None:
    ca, key = pki.create_ca(), pki.new_key()
    cert = certificate_from(_answer(ca, key, "bench-00001"), "bench-00001", ca.cert_pem)
    assert pki.identity(pki.load_cert(cert)) == ("worker", "bench-00001")
    with pytest.raises(EnrolError, match="issued"):  # a certificate for another id
        certificate_from(_answer(ca, key, "bench-00002"), "bench-00001", ca.cert_pem)
    with pytest.raises(EnrolError, match="not usable"):  # by another CA
        certificate_from(_answer(pki.create_ca(), key, "bench-00001"), "bench-00001", ca.cert_pem)
    with pytest.raises(EnrolError, match="not usable"):
        certificate_from(b'{"error": "nope"}', "bench-00001", ca.cert_pem)


def test_worker_credentials_load_into_a_tls_context(tmp_path: Path) -> None:
    ca, key = pki.create_ca(), pki.new_key()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    cert = certificate_from(_answer(ca, key, "bench-00003"), "bench-00003", ca.cert_pem)
    path = write_credential(tmp_path, "bench-00003", key, cert)
    assert path == credential_file(tmp_path, "bench-00003")
    assert path.stat().st_mode & 0o777 == 0o600  # a private key
    tls = WorkerTls(str(tmp_path / "ca.pem"), str(tmp_path))
    context = tls.context("bench-00003")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.server_hostname == MASTER_NAME == "master.cloudai"
    with pytest.raises(FileNotFoundError):  # a worker that did not join
        tls.context("bench-00004")
    plain = client_context(tmp_path / "ca.pem")
    assert plain.verify_mode == ssl.CERT_REQUIRED


def test_access_to_a_secure_master(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("cloudai_secret\n")
    access = MasterAccess(str(tmp_path / "ca.pem"), read_admin_token(tmp_path))
    assert access.headers == {"Authorization": "Bearer cloudai_secret"}
    with pytest.raises(EnrolError, match="admin token"):
        read_admin_token(tmp_path / "nowhere")
    (tmp_path / "admin.token").write_text("\n")
    with pytest.raises(EnrolError, match="empty"):
        read_admin_token(tmp_path)


def test_enrolment_summary() -> None:
    summary = Enrolment(workers=1000, seconds=5.678, bench_cpu_seconds=1.234).summary()
    assert summary == {
        "workers": 1000,
        "seconds": 5.68,
        "per_worker_ms": 5.68,
        "bench_cpu_s": 1.23,
    }
    assert orjson.loads(orjson.dumps(summary)) == summary
