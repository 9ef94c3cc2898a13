"""Where the cluster's keys and certificates live, and the gRPC credentials made of them.

Master (``<data_dir>/tls/``): ``ca.pem``, ``ca.key`` (0600), ``master.pem``,
``master.key`` (0600), created at the first start and reused after. Worker
(``<work_dir>/tls/``): ``ca.pem`` (pinned when it joined), ``worker.pem``, ``worker.key``
(0600), written once it has joined.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from cloudai.security import pki

log = logging.getLogger(__name__)


def local_hosts(extra: list[str] | None = None) -> list[str]:
    """Names and addresses people may use to reach this machine: for the master's
    certificate (HTTPS hostname checks)."""
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                hosts.append(address.address.split("%")[0])
    hosts.extend(extra or [])
    return hosts


@dataclass(frozen=True, slots=True)
class MasterIdentity:
    """The cluster CA and the master's certificate."""

    ca: pki.CertifiedKey
    master: pki.CertifiedKey
    directory: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def ca_fingerprint(self) -> str:
        return pki.fingerprint(self.ca.cert)

    @property
    def cert_file(self) -> Path:
        return self.directory / "master.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "master.key"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC: TLS with the master's certificate; a client must present a certificate
        signed by the cluster CA (who it is is checked per call)."""
        return grpc.ssl_server_credentials(
            [(self.master.key_pem, self.master.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """For the master's calls to workers: present the master's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.master.key_pem,
            certificate_chain=self.master.cert_pem,
        )

    def sign_worker(self, csr_pem: bytes, worker_id: str) -> bytes:
        return pki.cert_pem(pki.sign_worker_csr(self.ca, csr_pem, worker_id))


def load_or_create_master(directory: Path, hosts: list[str]) -> MasterIdentity:
    """The identity in ``directory``, created there on first use."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key_file, cert_file = directory / "master.key", directory / "master.pem"
    if ca_key.exists() and ca_cert.exists():
        pki.check_private_file(ca_key)
        ca = pki.CertifiedKey(
            pki.load_key(ca_key.read_bytes()), pki.load_cert(ca_cert.read_bytes())
        )
    else:
        ca = pki.create_ca()
        pki.write_private(ca_key, ca.key_pem)
        pki.write_public(ca_cert, ca.cert_pem)
        log.info(
            "created the cluster CA in %s (fingerprint %s)", directory, pki.fingerprint(ca.cert)
        )
    if key_file.exists() and cert_file.exists():
        pki.check_private_file(key_file)
        master = pki.CertifiedKey(
            pki.load_key(key_file.read_bytes()), pki.load_cert(cert_file.read_bytes())
        )
        pki.verify_issued_by(master.cert, ca.cert)
    else:
        master = pki.issue_master(ca, hosts)
        pki.write_private(key_file, master.key_pem)
        pki.write_public(cert_file, master.cert_pem)
    return MasterIdentity(ca, master, directory)


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """A joined worker's key and certificate, and the cluster CA it pinned."""

    worker_id: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        """The worker's gRPC server: callers must present a certificate of this cluster
        (that it is the master's is checked per call)."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def worker_tls_dir(work_dir: Path) -> Path:
    return work_dir / "tls"


def load_worker(work_dir: Path, worker_id: str) -> WorkerIdentity | None:
    """The identity a worker stored when it joined, if it is for ``worker_id``."""
    directory = worker_tls_dir(work_dir)
    key_file, cert_file, ca_file = (
        directory / "worker.key",
        directory / "worker.pem",
        directory / "ca.pem",
    )
    if not (key_file.exists() and cert_file.exists() and ca_file.exists()):
        return None
    pki.check_private_file(key_file)
    cert_pem, ca_pem = cert_file.read_bytes(), ca_file.read_bytes()
    cert = pki.load_cert(cert_pem)
    pki.verify_issued_by(cert, pki.load_cert(ca_pem))
    role, cert_id = pki.identity(cert)
    if role != "worker" or cert_id != worker_id:
        return None
    return WorkerIdentity(worker_id, key_file.read_bytes(), cert_pem, ca_pem)


def save_worker(work_dir: Path, identity: WorkerIdentity) -> None:
    directory = worker_tls_dir(work_dir)
    pki.write_private(directory / "worker.key", identity.key_pem)
    pki.write_public(directory / "worker.pem", identity.cert_pem)
    pki.write_public(directory / "ca.pem", identity.ca_pem)
