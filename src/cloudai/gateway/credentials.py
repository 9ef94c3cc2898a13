"""A gateway's TLS directory, made on the master's machine from the cluster CA.

Workers check the server they heartbeat to by the cluster CA and the gRPC name
``master.cloudai``; a gateway must therefore show a certificate of that CA with that
name. ``issue_gateway_tls`` writes ``ca.pem``, ``gateway.pem`` and ``gateway.key`` (0600)
into a directory to copy to the gateway's host. The certificate has the gateway's own
role (``pki.issue_gateway``: URI ``cloudai:gateway:<id>``, for TLS servers only): workers
accept it as the server they heartbeat to, but refuse it as a caller, so its holder
cannot assign tasks or register as the master (docs/SCALING.md, "Identity and
security").
"""

from __future__ import annotations

from pathlib import Path

from cloudai.security import pki


def issue_gateway_tls(
    master_tls_dir: Path, out_dir: Path, hosts: list[str], gateway_id: str
) -> Path:
    """Write the files of gateway ``gateway_id`` into ``out_dir``; PkiError (one line)
    when the id is not valid or the cluster CA cannot be read."""
    ca_key, ca_cert = master_tls_dir / "ca.key", master_tls_dir / "ca.pem"
    if not ca_key.exists() or not ca_cert.exists():
        raise pki.PkiError(
            f"no cluster CA in {master_tls_dir}: run this on the master's machine "
            "(--data-dir: the master's data directory)"
        )
    pki.check_private_file(ca_key)
    ca = pki.CertifiedKey(pki.load_key(ca_key.read_bytes()), pki.load_cert(ca_cert.read_bytes()))
    issued = pki.issue_gateway(ca, gateway_id, hosts)
    out_dir.mkdir(parents=True, exist_ok=True)
    pki.write_public(out_dir / "ca.pem", ca.cert_pem)
    pki.write_private(out_dir / "gateway.key", issued.key_pem)
    pki.write_public(out_dir / "gateway.pem", issued.cert_pem)
    return out_dir
