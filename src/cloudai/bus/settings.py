"""The bus settings the master and a gateway share: subject prefix, credential, TLS,
and the flags that set them.

A mixin of their settings objects (each declares its own ``bus`` and ``insecure``): the
checks of ``auth`` run when the settings are built, so a secure process without a
credential refuses to start with one line (docs/SCALING.md, "Identity and security").
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, model_validator

from cloudai.bus.auth import check_nkey_seed, check_private_key_file, credential_problem


class BusClientSettings(BaseModel):
    bus_prefix: str = "cloudai"  # subjects <prefix>.telemetry.<worker>, <prefix>.rpc.*
    bus_creds: Path | None = None  # NATS credentials file (JWT and NKey seed, as nsc writes)
    bus_nkey: Path | None = None  # NATS user NKey seed file (one line SU..., mode 0600)
    bus_tls_ca: Path | None = None  # CA the NATS server's certificate is checked against

    if TYPE_CHECKING:  # declared by each process's settings, with its own default
        bus: str | None
        insecure: bool

    bus_process: ClassVar[str] = "this process"  # how the one-line errors name it

    @model_validator(mode="after")
    def _bus_credential(self) -> Self:
        if not self.bus:
            return self
        if self.bus_nkey is not None:
            check_nkey_seed(self.bus_nkey)
        if self.bus_creds is not None:
            check_private_key_file("--bus-creds", self.bus_creds)
        problem = credential_problem(
            self.bus_process,
            self.bus,
            creds=self.bus_creds,
            nkey=self.bus_nkey,
            insecure=self.insecure,
        )
        if problem is not None:
            raise ValueError(problem)
        return self


def add_bus_credential_arguments(p: argparse.ArgumentParser) -> None:
    """The bus credential and TLS flags (``cloudai master`` and ``cloudai gateway``)."""
    p.add_argument(
        "--bus-nkey",
        type=Path,
        metavar="FILE",
        help="NATS user NKey seed file (one line SU..., mode 0600): this process's identity "
        "on the bus; secure mode needs it, --bus-creds, or USER:PASSWORD@ or TOKEN@ in --bus",
    )
    p.add_argument(
        "--bus-creds", type=Path, metavar="FILE", help="NATS credentials file (JWT, mode 0600)"
    )
    p.add_argument("--bus-tls-ca", type=Path, metavar="PEM", help="CA of the NATS server")


def bus_credential_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings those flags give (None: not given)."""
    return {
        "bus_nkey": getattr(args, "bus_nkey", None),
        "bus_creds": getattr(args, "bus_creds", None),
        "bus_tls_ca": getattr(args, "bus_tls_ca", None),
    }
