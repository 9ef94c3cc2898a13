"""``cloudai bench --tls``: the simulated workers join a secure master like real workers.

A secure master binds each worker id to one certificate (issued when the worker joins)
and checks on every call that the caller's certificate is the one bound to the id it
acts for. So before the load each simulated worker joins through the master's real API:

1. the coordinator reads the master's admin token and CA from its data dir
   (``<data>/admin.token``, ``<data>/tls/ca.pem``) and creates one join token for all
   of them (``POST /api/join-tokens``, ``uses`` = the number of workers);
2. per worker: a new P-256 key, a certificate signing request for its id and
   ``POST /api/join`` (a bounded number in flight); the answer's certificate is checked
   (issued by that CA, for that id) and kept with the key in one file per worker;
3. each generator loads its workers' files into one ``ssl.SSLContext`` each (ALPN
   ``h2``) and opens one TLS connection per worker, checking the master's certificate
   against the CA for the name ``master.cloudai``.

The WebSocket clients and the coordinator's ``GET /api/status`` use the admin token
(``Authorization: Bearer``) over HTTPS/WSS, verified against the same CA.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from cloudai.api.models import CreatedJoinToken, JoinRequest, JoinResponse, JoinTokenRequest
from cloudai.security import pki

MASTER_NAME = pki.MASTER_DNS  # in every master certificate, whatever its host names
ENROL_IN_FLIGHT = 16  # joins in flight: each costs the master a signature and a commit
JOIN_ATTEMPTS = 5  # a join answered 429 or 503 is tried again
JOIN_TOKEN_TTL = 3600.0
HTTP_TIMEOUT = 30.0


class EnrolError(RuntimeError):
    """The master refused to enrol the simulated workers; the text says why."""


@dataclass(frozen=True, slots=True)
class MasterAccess:
    """What a bench process needs to reach a secure master's HTTPS port: the cluster
    CA (a file) and an API token. Picklable, for the spawned processes."""

    ca_file: str
    token: str
    server_hostname: str = MASTER_NAME

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def context(self) -> ssl.SSLContext:
        return client_context(self.ca_file)


@dataclass(frozen=True, slots=True)
class WorkerTls:
    """Where a generator finds its workers' keys and certificates (``credential_file``)."""

    ca_file: str
    directory: str
    server_hostname: str = MASTER_NAME

    def context(self, worker_id: str) -> ssl.SSLContext:
        """A TLS client context that presents ``worker_id``'s certificate and offers h2."""
        return client_context(
            self.ca_file, credential_file(Path(self.directory), worker_id), alpn=("h2",)
        )


@dataclass(frozen=True, slots=True)
class Enrolment:
    workers: int
    seconds: float  # wall clock, from the join token to the last certificate
    bench_cpu_seconds: float  # the coordinator's CPU meanwhile (keys, CSRs, TLS)

    def summary(self) -> dict[str, float | int]:
        return {
            "workers": self.workers,
            "seconds": round(self.seconds, 2),
            "per_worker_ms": round(1000.0 * self.seconds / max(1, self.workers), 2),
            "bench_cpu_s": round(self.bench_cpu_seconds, 2),
        }


def client_context(
    ca_file: str | Path, cert_file: str | Path | None = None, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """Verify the peer against the cluster CA (names checked); present ``cert_file``
    (key and certificate in one PEM file) if given; offer the ``alpn`` protocols."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def credential_file(directory: Path, worker_id: str) -> Path:
    """The file holding a simulated worker's private key and certificate (PEM)."""
    return directory / f"{worker_id}.pem"


def read_admin_token(data_dir: Path) -> str:
    """The bootstrap admin token a secure master writes at its first start."""
    path = data_dir / "admin.token"
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise EnrolError(f"cannot read the master's admin token ({path}): {exc}") from None
    if not token:
        raise EnrolError(f"{path} is empty")
    return token


def join_token_body(workers: int) -> bytes:
    """``POST /api/join-tokens``: one token that admits exactly ``workers`` joins."""
    return (
        JoinTokenRequest(
            ttl_seconds=JOIN_TOKEN_TTL, uses=workers, description="cloudai bench --tls"
        )
        .model_dump_json()
        .encode()
    )


def join_body(token: str, worker_id: str, key: pki.PrivateKey) -> bytes:
    """``POST /api/join`` for ``worker_id``: the join token and a CSR made with ``key``."""
    csr = pki.create_csr(key, worker_id).decode()
    return JoinRequest(token=token, worker_id=worker_id, csr_pem=csr).model_dump_json().encode()


def certificate_from(body: bytes, worker_id: str, ca_pem: bytes) -> bytes:
    """The certificate in a join answer, checked: issued by the cluster CA, for
    ``worker_id``. EnrolError otherwise."""
    try:
        answer = JoinResponse.model_validate_json(body)
        cert = pki.load_cert(answer.certificate_pem.encode())
        pki.verify_issued_by(cert, pki.load_cert(ca_pem))
    except (ValidationError, pki.PkiError, InvalidSignature) as exc:
        # InvalidSignature: a certificate whose issuer has the CA's name but another key
        # (pki.verify_issued_by lets it through unconverted)
        reason = str(exc) or type(exc).__name__
        raise EnrolError(f"the join answer for {worker_id} is not usable: {reason}") from None
    if pki.identity(cert) != ("worker", worker_id):
        raise EnrolError(f"the master issued {pki.identity(cert)} to {worker_id}")
    return answer.certificate_pem.encode()


def write_credential(directory: Path, worker_id: str, key: pki.PrivateKey, cert: bytes) -> Path:
    """Key and certificate in one 0600 file (a temporary directory: no fsync)."""
    path = credential_file(directory, worker_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pki.key_pem(key) + cert)
    finally:
        os.close(fd)
    return path


def _error_text(status: int, body: bytes) -> str:
    text = body.decode(errors="replace").strip()
    return f"HTTP {status}: {text[:300]}" if text else f"HTTP {status}"


def enrol(
    base_url: str,
    access: MasterAccess,
    worker_ids: Sequence[str],
    directory: Path,
    in_flight: int = ENROL_IN_FLIGHT,
) -> Enrolment:
    """Join every worker of ``worker_ids`` at the master (``base_url``: its
    ``https://host:port``); write their credentials under ``directory``."""
    started, cpu0 = time.monotonic(), time.process_time()
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = Path(access.ca_file).read_bytes()
    asyncio.run(_enrol(base_url, access, worker_ids, directory, in_flight, ca_pem))
    return Enrolment(len(worker_ids), time.monotonic() - started, time.process_time() - cpu0)


async def _enrol(
    base_url: str,
    access: MasterAccess,
    worker_ids: Sequence[str],
    directory: Path,
    in_flight: int,
    ca_pem: bytes,
) -> None:
    context = access.context()
    connector = aiohttp.TCPConnector(ssl=context, limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
            async with http.post(
                base_url + path,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                server_hostname=access.server_hostname,
            ) as answer:
                return answer.status, await answer.read()

        try:
            status, body = await post(
                "/api/join-tokens", join_token_body(len(worker_ids)), access.headers
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EnrolError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}") from None
        if status != 201:
            raise EnrolError(f"creating a join token failed: {_error_text(status, body)}")
        token = CreatedJoinToken.model_validate_json(body).token
        gate = asyncio.Semaphore(in_flight)

        async def join(worker_id: str) -> None:
            async with gate:
                key = pki.new_key()
                request = join_body(token, worker_id, key)
                for attempt in range(JOIN_ATTEMPTS):
                    status, body = await post("/api/join", request, {})
                    if status not in (429, 503):
                        break
                    await asyncio.sleep(0.2 * (attempt + 1))
                if status != 200:
                    raise EnrolError(f"{worker_id} could not join: {_error_text(status, body)}")
                write_credential(
                    directory, worker_id, key, certificate_from(body, worker_id, ca_pem)
                )

        try:
            await asyncio.gather(*(join(worker_id) for worker_id in worker_ids))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EnrolError(f"joining at {base_url} failed: {type(exc).__name__}: {exc}") from None
