"""The cluster's public-key infrastructure, on ``cryptography``.

A master creates, at its first start, a cluster CA and its own certificate. Workers get
theirs by joining (a CSR signed by the CA in exchange for a join token). Identities live
in the certificates' subject alternative names:

- the master: URI ``cloudai:master`` and DNS ``master.cloudai`` (the name gRPC checks when
  a worker calls it), plus the DNS names and IP addresses people reach its HTTPS port by;
- a worker: URI ``cloudai:worker:<id>`` and DNS ``<hash of id>.worker.cloudai`` (the name
  the master checks when it calls that worker: another worker's certificate fails);
- a gateway: URI ``cloudai:gateway:<id>``, DNS ``master.cloudai`` (workers heartbeat to
  it as to the master) plus the hosts it is reached by, and a server-only key usage: TLS
  refuses it as a client certificate, and its role is not the master's, so its holder
  cannot call workers as the master.

The master's and workers' certificates serve both ends of TLS (server and client).

Pure apart from ``write_private``/``write_public`` (files with 0600/0644 modes).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from cloudai.identifiers import InvalidId, check_id

MASTER_URI = "cloudai:master"
MASTER_DNS = "master.cloudai"
WORKER_URI_PREFIX = "cloudai:worker:"
WORKER_DNS_SUFFIX = ".worker.cloudai"
GATEWAY_URI_PREFIX = "cloudai:gateway:"
CA_DAYS = 3650
LEAF_DAYS = 825

PrivateKey = ec.EllipticCurvePrivateKey


class PkiError(ValueError):
    """A certificate, key or request that cannot be used; the text says why."""


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the private key is not an EC key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (what join tokens pin)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def worker_dns_name(worker_id: str) -> str:
    """The DNS name in a worker's certificate: a hash, so any id makes a valid name."""
    digest = hashlib.sha256(worker_id.encode()).hexdigest()[:40]
    return f"w{digest}{WORKER_DNS_SUFFIX}"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CloudAI cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    key: PrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)


def create_ca(cluster_name: str = "cloudai") -> CertifiedKey:
    key = new_key()
    name = _name(f"{cluster_name} cluster CA")
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, cert)


def _leaf(
    ca: CertifiedKey,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    names: list[x509.GeneralName],
    usages: tuple[ObjectIdentifier, ...] = (
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ),
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    """``hosts`` (DNS names or IP addresses, IPv6 with or without brackets) as SAN
    entries, blanks and repeats left out."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip().strip("[]")
        if not host or host in seen or host == MASTER_DNS:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_master(ca: CertifiedKey, hosts: list[str]) -> CertifiedKey:
    """The master's certificate: its role, the gRPC name, and ``hosts`` (DNS names or IP
    addresses) for people and programs that reach its HTTPS port by them."""
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(MASTER_URI),
        x509.DNSName(MASTER_DNS),
        *_host_names(hosts),
    ]
    key = new_key()
    return CertifiedKey(key, _leaf(ca, key.public_key(), "cloudai master", names))


def issue_gateway(ca: CertifiedKey, gateway_id: str, hosts: list[str]) -> CertifiedKey:
    """A gateway's certificate: its role and id, the gRPC name workers check
    (``master.cloudai``) and ``hosts``; for TLS servers only (no client-auth key usage),
    so it can serve workers but never call them. PkiError when the id is not valid."""
    try:
        check_id("gateway id", gateway_id)
    except InvalidId as exc:
        raise PkiError(str(exc)) from None
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(GATEWAY_URI_PREFIX + gateway_id),
        x509.DNSName(MASTER_DNS),
        *_host_names(hosts),
    ]
    key = new_key()
    return CertifiedKey(
        key,
        _leaf(
            ca,
            key.public_key(),
            f"cloudai gateway {gateway_id}",
            names,
            usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        ),
    )


def worker_names(worker_id: str) -> list[x509.GeneralName]:
    return [
        x509.UniformResourceIdentifier(WORKER_URI_PREFIX + worker_id),
        x509.DNSName(worker_dns_name(worker_id)),
    ]


def create_csr(key: PrivateKey, worker_id: str) -> bytes:
    """A worker's certificate signing request (PEM) for its id."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(f"cloudai worker {worker_id}"))
        .add_extension(x509.SubjectAlternativeName(worker_names(worker_id)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_worker_csr(ca: CertifiedKey, csr_pem: bytes, worker_id: str) -> x509.Certificate:
    """Sign a worker's CSR for ``worker_id``. Whatever names the request asks for, the
    certificate carries only that id's identity."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the certificate signing request's signature is not valid")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PkiError("the certificate signing request must carry an EC (P-256) key")
    return _leaf(ca, public_key, f"cloudai worker {worker_id}", worker_names(worker_id))


def identity(cert: x509.Certificate) -> tuple[str, str | None]:
    """("master", None), ("worker", id), ("gateway", id) or ("unknown", None), from the
    URI names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "unknown", None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri == MASTER_URI:
            return "master", None
        if uri.startswith(WORKER_URI_PREFIX):
            return "worker", uri[len(WORKER_URI_PREFIX) :]
        if uri.startswith(GATEWAY_URI_PREFIX):
            return "gateway", uri[len(GATEWAY_URI_PREFIX) :]
    return "unknown", None


def verify_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """PkiError unless ``cert`` is signed by ``ca`` and valid now."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        why = str(exc) or "its signature does not match the CA's key"
        raise PkiError(f"the certificate was not issued by this cluster's CA: {why}") from None
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError("the certificate is not valid at this time")


# -- files --------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Write a secret: created 0600 (never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def check_private_file(path: Path) -> None:
    """PkiError when a secret file can be read by others than its owner."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PkiError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
