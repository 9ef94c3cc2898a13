"""Joining a cluster with a join token: the worker's half of enrollment.

1. Fetch the cluster CA from the master's HTTPS port (``GET /api/ca``, without trusting
   anything yet) and compare its SHA-256 with the fingerprint the token carries: a
   different master, or something in between, is refused before the token's secret is
   sent anywhere.
2. Send the token, the worker id and a certificate signing request to ``POST /api/join``
   over TLS verified against that CA and the master's name (``master.cloudai``).
3. Check the answer (a certificate for this id, issued by that CA) and keep the key,
   the certificate and the CA in the work dir (the key 0600). A worker joins once; after
   that it starts with what it kept.
"""

from __future__ import annotations

import ssl

import aiohttp
import orjson
from pydantic import ValidationError

from cloudai.addresses import join_host_port, split_host_port
from cloudai.api.models import ClusterCa, JoinRequest, JoinResponse
from cloudai.security import pki
from cloudai.security.credentials import WorkerIdentity
from cloudai.security.tokens import TokenFormatError, parse_join_token


class JoinError(RuntimeError):
    """Joining failed; one line that says why and what to do."""


def _verified_context(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def join_cluster(
    master_address: str, token_text: str, worker_id: str, timeout: float = 10.0
) -> WorkerIdentity:
    """Join the master at ``master_address`` (its gRPC "host:port"; the join port comes
    from the token). Raises JoinError."""
    try:
        token = parse_join_token(token_text)
    except TokenFormatError as exc:
        raise JoinError(f"the join token is not usable: {exc}") from None
    host, _grpc_port = split_host_port(master_address)
    base = f"https://{join_host_port(host, token.join_port)}"
    key = pki.new_key()
    request = JoinRequest(
        token=token_text.strip(),
        worker_id=worker_id,
        csr_pem=pki.create_csr(key, worker_id).decode(),
    )
    limits = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=limits) as http:
        try:  # nothing is trusted yet: the fingerprint check below decides
            async with http.get(f"{base}/api/ca", ssl=False) as answer:
                if answer.status != 200:
                    raise JoinError(f"{base}/api/ca answered HTTP {answer.status}")
                body = await answer.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise JoinError(f"cannot reach the master's join endpoint {base}: {exc}") from None
        try:
            ca_pem = ClusterCa.model_validate_json(body).ca_pem.encode()
            ca = pki.load_cert(ca_pem)
        except (ValidationError, pki.PkiError) as exc:
            raise JoinError(f"{base} did not send a CA certificate: {exc}") from None
        if pki.fingerprint(ca) != token.ca_fingerprint:
            raise JoinError(
                f"the master at {base} presents a CA with fingerprint {pki.fingerprint(ca)[:16]}…,"
                f" not the cluster's {token.ca_fingerprint[:16]}… that the token names: wrong"
                " master, or something in between; the token was not sent"
            )
        try:
            async with http.post(
                f"{base}/api/join",
                data=request.model_dump_json(),
                headers={"Content-Type": "application/json"},
                ssl=_verified_context(ca_pem),
                server_hostname=pki.MASTER_DNS,
            ) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise JoinError(
                        f"the master refused the join: {_error_text(body, answer.status)}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise JoinError(f"joining at {base} failed: {exc}") from None
    try:
        response = JoinResponse.model_validate_json(body)
        cert = pki.load_cert(response.certificate_pem.encode())
        pki.verify_issued_by(cert, ca)
    except (ValidationError, pki.PkiError) as exc:
        raise JoinError(f"the master's answer to the join is not usable: {exc}") from None
    if pki.identity(cert) != ("worker", worker_id):
        raise JoinError(
            f"the master issued a certificate for {pki.identity(cert)}, not {worker_id}"
        )
    return WorkerIdentity(worker_id, pki.key_pem(key), response.certificate_pem.encode(), ca_pem)


def _error_text(body: bytes, status: int) -> str:
    try:
        error = orjson.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error) if error else f"HTTP {status}"
