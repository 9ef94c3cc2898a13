"""`cloudai gateway`: flags -> GatewaySettings -> run_gateway()."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cloudai.addresses import parse_port
from cloudai.bus.settings import add_bus_credential_arguments, bus_credential_flags
from cloudai.gateway.settings import GatewaySettings
from cloudai.settings import SettingsError

SUMMARY = "run a gateway: workers' gRPC and telemetry WebSockets, through the bus"
DESCRIPTION = (
    "Run a gateway: it serves workers' gRPC (heartbeats, registration, results) like a "
    "master, validates heartbeats and publishes them on the bus (NATS) for the master; "
    "with --ws-port it also serves /ws/telemetry for every worker (docs/SCALING.md)."
)


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _default(name: str) -> Any:
    return GatewaySettings.default(name)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("gateway", help=SUMMARY, description=DESCRIPTION)
    p.add_argument(
        "--id",
        help="this gateway's name in logs, in its inbox on the bus (_INBOX.<prefix>.gw.<id>: "
        "its NATS user may subscribe there, docs/SCALING.md) and, with --issue-tls-dir, in its "
        "certificate (default: the host name)",
    )
    p.add_argument(
        "--bus",
        metavar="URL",
        help=f"the NATS server(s), comma-separated (default {_default('bus')})",
    )
    add_bus_credential_arguments(p)
    p.add_argument(
        "--grpc-port",
        type=_port,
        help=f"gRPC port for workers (default {_default('grpc_port')}; 0: any free port)",
    )
    p.add_argument("--host", help=f"listen address (default {_default('grpc_host')})")
    p.add_argument(
        "--no-reuse-port",
        action="store_true",
        help="do not share the gRPC port with other gateways on this host (SO_REUSEPORT)",
    )
    p.add_argument(
        "--ws-port",
        type=_port,
        help="serve /ws/telemetry (every worker, from the bus) and /health on this port: "
        "WSS with the gateway's certificate and the master's API tokens (WS, no tokens, "
        "with --insecure)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext gRPC and WebSockets without tokens, as a master's --insecure "
        "(for Go workers)",
    )
    p.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help="ca.pem, gateway.pem and gateway.key: mutual TLS with workers",
    )
    p.add_argument(
        "--issue-tls-dir",
        type=Path,
        metavar="DIR",
        help="on the master's machine: write the ca.pem, gateway.pem and gateway.key of "
        "gateway --id into DIR (signed by the cluster CA of --data-dir) and exit; the "
        "certificate serves workers but cannot call them as the master",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="with --issue-tls-dir: the master's data directory (default: the master's)",
    )
    p.add_argument(
        "--tls-host",
        action="append",
        default=[],
        metavar="HOST",
        help="with --issue-tls-dir: a name or address the certificate also holds; repeatable",
    )
    p.add_argument("--ready-file", type=Path, help="write {grpc_port, http_port, pid} here")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    settings: GatewaySettings = GatewaySettings.load(
        gateway_id=args.id,
        bus=args.bus,
        **bus_credential_flags(args),
        grpc_port=args.grpc_port,
        grpc_host=args.host,
        ws_host=args.host,
        reuse_port=False if args.no_reuse_port else None,
        ws_port=args.ws_port,
        insecure=args.insecure,
        tls_dir=args.tls_dir,
    )
    return settings


def issue(args: argparse.Namespace) -> int:
    from cloudai.gateway.credentials import issue_gateway_tls
    from cloudai.security.pki import PkiError
    from cloudai.settings import default_data_root

    data_dir = args.data_dir or default_data_root()
    gateway_id: str = args.id or _default("gateway_id")
    try:
        out = issue_gateway_tls(data_dir / "tls", args.issue_tls_dir, args.tls_host, gateway_id)
    except (PkiError, OSError) as exc:
        print(f"cloudai gateway: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}/ca.pem, gateway.pem, gateway.key for gateway {gateway_id!r}: copy them "
        f"to the gateway's host and run cloudai gateway --tls-dir DIR"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.issue_tls_dir is not None:
        return issue(args)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"cloudai gateway: {exc}", file=sys.stderr)
        return 2
    from cloudai.gateway.server import run_gateway

    return run_gateway(settings, ready_file=args.ready_file)
