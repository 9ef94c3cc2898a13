"""The gateway's one typed settings object (flags over ``CLOUDAI_*`` env over the config
file's ``[gateway]`` table over these defaults)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from cloudai.bus.settings import BusClientSettings
from cloudai.bus.subjects import bus_servers
from cloudai.identifiers import check_id
from cloudai.settings import CloudAISettings
from cloudai.validation import MAX_MESSAGE_BYTES

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class GatewaySettings(CloudAISettings, BusClientSettings):
    config_table: ClassVar[str] = "gateway"
    bus_process: ClassVar[str] = "a secure gateway"

    # Its certificate's id and its inbox on the bus (_INBOX.<bus_prefix>.gw.<id>).
    gateway_id: str = Field(default_factory=socket.gethostname)
    # Secure mode: a credential for NATS (bus_nkey, bus_creds, or user/token in the URL;
    # the other bus_* settings: cloudai.bus.settings).
    bus: str = "nats://127.0.0.1:4222"
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(50051, ge=0, le=65535)
    # SO_REUSEPORT: several gateways on one host share the port; the kernel spreads new
    # connections over them, and a gateway that dies leaves the others listening.
    reuse_port: bool = True
    # Telemetry WebSocket (/ws/telemetry, /health) for every worker, from the bus; None: off.
    ws_host: str = "0.0.0.0"
    ws_port: int | None = Field(None, ge=0, le=65535)
    ws_batch_interval: float = Field(0.005, ge=0, allow_inf_nan=False)
    ws_max_frame_rate: Seconds = 40_000.0
    ws_ping_interval: Seconds = 54.0
    ws_client_timeout: Seconds = 60.0
    inactivity_timeout: Seconds = 30.0  # the WebSocket's is_active, as on the master
    heartbeat_queue_size: int = Field(8, ge=1)
    call_timeout: Seconds = 5.0  # a call forwarded to the master over the bus
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=1024)
    shutdown_grace: float = Field(3.0, ge=0)
    # Secure by default: mutual TLS with workers. tls_dir holds ca.pem (the cluster CA),
    # gateway.pem and gateway.key (docs/SCALING.md, "Security").
    insecure: bool = False
    tls_dir: Path | None = None

    @field_validator("gateway_id")
    @classmethod
    def _check_gateway_id(cls, value: str) -> str:
        return check_id("gateway id", value)

    @field_validator("bus")
    @classmethod
    def _check_bus(cls, value: str) -> str:
        bus_servers(value)
        return value

    @model_validator(mode="after")
    def _secure(self) -> GatewaySettings:
        if not self.insecure and self.tls_dir is None:
            raise ValueError(
                "a gateway needs --tls-dir (ca.pem, gateway.pem, gateway.key: docs/SCALING.md), "
                "or --insecure for plaintext workers"
            )
        return self
