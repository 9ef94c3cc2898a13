from __future__ import annotations

import pytest

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
