from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloudai.security import pki


def test_master_and_worker_identities() -> None:
    ca = pki.create_ca()
    master = pki.issue_master(ca, ["localhost", "127.0.0.1", "::1", "localhost"])
    assert pki.identity(master.cert) == ("master", None)
    key = pki.new_key()
    cert = pki.sign_worker_csr(ca, pki.create_csr(key, "gpu:7@rack"), "gpu:7@rack")
    assert pki.identity(cert) == ("worker", "gpu:7@rack")
    pki.verify_issued_by(cert, ca.cert)
    assert len(pki.fingerprint(ca.cert)) == 64
    assert pki.worker_dns_name("a") != pki.worker_dns_name("b")


def test_the_csr_cannot_choose_its_identity() -> None:
    ca = pki.create_ca()
    csr = pki.create_csr(pki.new_key(), "w-evil")
    assert pki.identity(pki.sign_worker_csr(ca, csr, "w1")) == ("worker", "w1")


def test_another_clusters_certificate_is_a_one_line_refusal() -> None:
    ours, theirs = pki.create_ca(), pki.create_ca()  # same name, other keys
    stranger = pki.sign_worker_csr(theirs, pki.create_csr(pki.new_key(), "w1"), "w1")
    with pytest.raises(pki.PkiError, match="not issued by this cluster's CA"):
        pki.verify_issued_by(stranger, ours.cert)


def test_garbage_is_refused() -> None:
    with pytest.raises(pki.PkiError, match="not a PEM certificate signing request"):
        pki.sign_worker_csr(pki.create_ca(), b"garbage", "w1")
    with pytest.raises(pki.PkiError, match="not a PEM certificate"):
        pki.load_cert(b"garbage")


def test_private_files_are_0600(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "k" / "key.pem"
    pki.write_private(secret, b"x")
    assert secret.stat().st_mode & 0o777 == 0o600
    pki.check_private_file(secret)
    secret.chmod(0o644)
    with pytest.raises(pki.PkiError, match="readable by others"):
        pki.check_private_file(secret)


def _extended_key_usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_a_gateway_certificate_has_its_own_role() -> None:
    ca = pki.create_ca()
    gateway = pki.issue_gateway(ca, "gw-1.rack:a", ["gw.example", "10.0.0.7", "[::1]", ""])
    pki.verify_issued_by(gateway.cert, ca.cert)
    assert pki.identity(gateway.cert) == ("gateway", "gw-1.rack:a")
    assert pki.identity(gateway.cert)[0] != "master"
    san = _san(gateway.cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "cloudai:gateway:gw-1.rack:a"
    ]
    assert pki.MASTER_URI not in san.get_values_for_type(x509.UniformResourceIdentifier)
    # The name workers check when they heartbeat, then the hosts it is reached by.
    assert san.get_values_for_type(x509.DNSName) == [pki.MASTER_DNS, "gw.example"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    }


def test_a_gateway_certificate_serves_tls_and_never_authenticates_a_client() -> None:
    ca = pki.create_ca()
    gateway = pki.issue_gateway(ca, "g1", [])
    assert _extended_key_usages(gateway.cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    # The master's and workers' certificates keep both ends of TLS.
    master = pki.issue_master(ca, [])
    worker = pki.sign_worker_csr(ca, pki.create_csr(pki.new_key(), "w1"), "w1")
    for cert in (master.cert, worker):
        assert _extended_key_usages(cert) == {
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        }


@pytest.mark.parametrize("bad", ["", "-g", "g 1", "g/1", "g" * 129])
def test_a_gateway_id_follows_the_id_rule(bad: str) -> None:
    with pytest.raises(pki.PkiError, match="gateway id"):
        pki.issue_gateway(pki.create_ca(), bad, [])
