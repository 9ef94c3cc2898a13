"""A secure gateway serves only with its own certificate: the gateway role (never the
master's) and its own id. Pure: certificates made in memory."""

from __future__ import annotations

import pytest

from cloudai.gateway.server import check_gateway_certificate
from cloudai.security import pki

CA = pki.create_ca()


def test_its_own_gateway_certificate_is_taken() -> None:
    check_gateway_certificate(pki.issue_gateway(CA, "g1", ["127.0.0.1"]).cert_pem, "g1")


def test_a_master_certificate_or_another_gateways_is_refused_in_one_line() -> None:
    master = pki.issue_master(CA, ["127.0.0.1"]).cert_pem
    with pytest.raises(pki.PkiError, match=r"not a gateway's certificate \(its role: master\)"):
        check_gateway_certificate(master, "g1")
    other = pki.issue_gateway(CA, "g2", []).cert_pem
    with pytest.raises(pki.PkiError, match="gateway 'g2''s certificate") as refused:
        check_gateway_certificate(other, "g1")
    assert "--issue-tls-dir DIR --id g1" in str(refused.value)
    assert "\n" not in str(refused.value)
