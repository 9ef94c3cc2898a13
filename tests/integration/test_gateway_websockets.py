"""A gateway's WebSockets (`cloudai gateway --ws-port`) with real processes and the real
NATS server.

Secure mode (a nats-server of the test with the users of docs/SCALING.md, `--bus-nkey`):
the gateway serves WSS with its certificate (checked by the cluster CA) and checks the
master's API tokens itself, on a copy it fetches over the bus: no token is 401, a read
token made on the master streams a worker's telemetry, and once that token is revoked on
the master a new connection with it is 401. Plain ws:// is not served.

Insecure mode (the shared NATS server): a worker unregistered on the master leaves the
gateway's dashboards with the master's last message (`"state": "removed"`).

NATS (or nats-server) missing: skipped, or failed when CI is set (.ci/run has both)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloudai.cli.api_client import client_ssl_context
from cloudai.security.tokens import Scope
from tests.bus_harness import (
    NatsServer,
    start_gateway,
)
from tests.harness import (
    admin_client,
    async_wait_until,
    child_env,
    cloudai_command,
    start_master,
    start_process,
    start_worker,
)

WAIT = 30.0

pytestmark = pytest.mark.integration


async def entries_until(
    ws: aiohttp.ClientWebSocketResponse, done: Any, what: str
) -> dict[str, dict[str, Any]]:
    """Read /ws/telemetry messages until ``done(latest entries by worker, message)``."""
    latest: dict[str, dict[str, Any]] = {}

    async def read() -> dict[str, dict[str, Any]]:
        async for message in ws:
            assert message.type is aiohttp.WSMsgType.TEXT, message
            entries = json.loads(message.data)
            latest.update(entries)
            if done(latest, entries):
                return latest
        raise AssertionError(f"the WebSocket closed before {what}")

    try:
        return await asyncio.wait_for(read(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out after {WAIT} s waiting for {what}: {latest}") from None


def streaming(worker_id: str) -> Any:
    def done(latest: dict[str, dict[str, Any]], _: object) -> bool:
        entry = latest.get(worker_id, {})
        return bool(entry.get("is_active") and entry.get("memory_usage"))

    return done


def removal_of(worker_id: str) -> Any:
    def done(_: object, entries: dict[str, dict[str, Any]]) -> bool:
        return entries.get(worker_id, {}).get("state") == "removed"

    return done


async def handshake_status(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext, token: str | None
) -> int:
    """101 when the WebSocket opens, else the HTTP status of the refusal."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with http.ws_connect(url, ssl=tls, headers=headers):
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_a_secure_gateway_checks_the_masters_api_tokens(
    tmp_path: Path, auth_bus: NatsServer, processes: list[Any]
) -> None:
    nkey = auth_bus.seeds
    master = start_master(
        tmp_path, "--bus", auth_bus.url, "--bus-nkey", str(nkey["master"]), secure=True
    )
    processes.append(master)
    tls_dir = tmp_path / "gateway-tls"
    await asyncio.to_thread(
        subprocess.run,
        cloudai_command(
            "gateway", "--issue-tls-dir", str(tls_dir), "--id", "g1",
            "--data-dir", str(tmp_path / "data"), "--tls-host", "127.0.0.1",
        ),
        check=True,
        env=child_env(),
        capture_output=True,
    )  # fmt: skip
    gateway = start_process(
        ["gateway", "--id", "g1", "--bus", auth_bus.url, "--bus-nkey", str(nkey["gateway"]),
         "--host", "127.0.0.1", "--grpc-port", "0", "--ws-port", "0", "--tls-dir", str(tls_dir)],
        tmp_path,
        "gateway",
    )  # fmt: skip
    processes.append(gateway)
    api = admin_client(master)
    join = api.create_join_token(uses=1, worker_id="w1").token
    address = f"127.0.0.1:{gateway.ready['grpc_port']}"
    processes.append(start_worker(tmp_path, "w1", "--interval", "0.3", master=address, join=join))
    port = gateway.ready["http_port"]
    url = f"wss://127.0.0.1:{port}/ws/telemetry"
    tls = client_ssl_context(tls_dir / "ca.pem")  # the cluster CA, as for the master

    async with aiohttp.ClientSession() as http:
        assert await handshake_status(http, url, tls, None) == 401
        assert await handshake_status(http, url, tls, "cloudai.0123456789ab." + "x" * 43) == 401
        with pytest.raises(aiohttp.ClientError):  # WSS only: no plaintext WebSocket
            async with http.ws_connect(f"ws://127.0.0.1:{port}/ws/telemetry"):
                pass
        async with http.get(f"https://127.0.0.1:{port}/health", ssl=tls) as health:
            assert health.status == 200  # open, as on the master

        created = api.create_api_token(Scope.READ, "dashboard")
        token_id = created.info.token_id
        # The master tells the gateways; the gateway fetches the tokens again.
        await async_wait_until(
            lambda: f"made: {token_id}" in gateway.log(), WAIT, "the gateway to learn the token"
        )
        headers = {"Authorization": f"Bearer {created.token}"}
        async with http.ws_connect(url, ssl=tls, headers=headers) as ws:
            await entries_until(ws, streaming("w1"), "w1's telemetry on the gateway's WSS")
        # The browser's way: the token in the query.
        async with http.ws_connect(f"{url}/w1?token={created.token}", ssl=tls) as ws:
            await entries_until(ws, streaming("w1"), "w1's telemetry, token in the query")

        api.revoke_api_token(token_id)
        await async_wait_until(
            lambda: f"revoked: {token_id}" in gateway.log(), WAIT, "the gateway to learn it"
        )
        assert await handshake_status(http, url, tls, created.token) == 401
    assert "API tokens: " in gateway.log() and "sent a token that is not accepted" in gateway.log()


async def test_an_unregistered_worker_leaves_a_gateways_dashboards(
    tmp_path: Path, nats_url: str, prefix: str, processes: list[Any]
) -> None:
    master = start_master(
        tmp_path, "--bus", nats_url, "--allow-worker", "w1", CLOUDAI_BUS_PREFIX=prefix
    )
    processes.append(master)
    gateway = start_gateway(tmp_path, "g1", nats_url, prefix)
    processes.append(gateway)
    worker = start_worker(tmp_path, "w1", "--interval", "0.3", master=gateway.extra["grpc"])
    processes.append(worker)
    url = gateway.extra["ws"] + "/ws/telemetry"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await entries_until(ws, streaming("w1"), "w1's telemetry on the gateway")
        await asyncio.to_thread(admin_client(master).unregister, "w1")
        last = await entries_until(ws, removal_of("w1"), "w1's removal on the gateway")
        assert last["w1"]["is_active"] is False
        # A new dashboard's snapshot no longer lists it.
        async with http.ws_connect(url) as fresh:
            snapshot = json.loads((await fresh.receive(timeout=WAIT)).data)
        assert "w1" not in snapshot
