"""The master's HTTP port with tokens, over real TLS on loopback.

The app is built in-process as the master builds it (``create_app``, ``add_routes``,
``install_auth``), with the real ``AccessControl`` on a SQLite store, a certificate from
the cluster PKI (``localhost``, ``127.0.0.1``) and a small stand-in for the cluster
(the policy does not depend on what the handlers do). The client side is the product's:
``ApiClient`` (urllib), the ``cloudai`` commands, and aiohttp for the WebSocket.
"""

from __future__ import annotations

import asyncio
import ssl
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from cloudai.api.models import ClusterCa, ClusterSummary, JoinRequest, JoinResponse, Worker
from cloudai.cli.api_client import ApiClient, ApiError, client_ssl_context
from cloudai.cli.main import main
from cloudai.master.access import AccessControl
from cloudai.master.admin_api import add_routes, master_address_from
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.http_auth import install_auth, server_ssl_context
from cloudai.master.ws_hub import TelemetryHub
from cloudai.security import pki
from cloudai.security.limiter import FailureLimiter
from cloudai.security.tokens import Scope
from cloudai.store.factory import open_store
from cloudai.telemetry.manager import TelemetryManager

MAX_FAILURES = 5


class Cluster:
    """What the handlers under test ask of ClusterAdmin."""

    def summary(self) -> ClusterSummary:
        return ClusterSummary(
            workers=0,
            workers_reporting=0,
            active_workers=0,
            tasks_running=0,
            tasks_queued=0,
            tasks_finished=0,
            tasks_by_status={},
            heartbeats=0,
            heartbeats_per_second=0.0,
            websocket_clients=0,
        )

    def list_workers(self) -> list[Worker]:
        return []

    def revoke_worker(self, worker_id: str) -> None:
        raise AdminError(ErrorKind.NOT_FOUND, f"unknown worker {worker_id!r}")


async def refuse_join(request: JoinRequest, peer: str) -> JoinResponse:
    raise AdminError(ErrorKind.UNAUTHORIZED, "the join token is not known to this master")


@dataclass
class Master:
    url: str
    port: int
    ca_file: Path
    admin: str
    read: str
    access: AccessControl
    ca: pki.CertifiedKey

    def client(self, token: str | None = None, **kwargs: Any) -> ApiClient:
        return ApiClient(self.url, token, ca_file=self.ca_file, timeout=5.0, **kwargs)

    @property
    def tls(self) -> ssl.SSLContext:
        return client_ssl_context(self.ca_file)


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Master]:
    ca = pki.create_ca()
    leaf = pki.issue_master(ca, ["localhost", "127.0.0.1"])
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "ca.pem").write_bytes(ca.cert_pem)
    (tls / "master.pem").write_bytes(leaf.cert_pem)
    (tls / "master.key").write_bytes(leaf.key_pem)
    store = await asyncio.to_thread(open_store, None, tmp_path)
    port = 0
    access = AccessControl(store, pki.fingerprint(ca.cert), lambda: port)
    await access.load()
    _, admin = await access.create_api_token(Scope.ADMIN, "test admin", None)
    _, read = await access.create_api_token(Scope.READ, "test reader", None)

    app = create_app(TelemetryManager(), TelemetryHub(), WebSocketConfig())
    add_routes(
        app,
        cast(ClusterAdmin, Cluster()),
        None,
        tokens=access,
        join=refuse_join,
        master_address=master_address_from("master.example", lambda: 50051),
        cluster_ca=ClusterCa(ca_pem=ca.cert_pem.decode(), fingerprint=pki.fingerprint(ca.cert)),
    )
    install_auth(app, access.authenticate, FailureLimiter(MAX_FAILURES, 60.0))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_ssl_context(tls / "master.pem", tls / "master.key"),
    )
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield Master(f"https://127.0.0.1:{port}", port, tls / "ca.pem", admin, read, access, ca)
    finally:
        await runner.cleanup()
        await asyncio.to_thread(store.close)


async def _call(
    master: Master,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    remote_host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"https://{remote_host}:{master.port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, json=body, ssl=master.tls) as response,
    ):
        raw = await response.read()
        return response.status, dict(response.headers), orjson.loads(raw) if raw else None


async def test_without_a_token_only_health_and_join_answer(master: Master) -> None:
    status, _, body = await _call(master, "GET", "/health")
    assert status == 200 and body["status"] == "healthy"
    status, _, body = await _call(
        master, "POST", "/api/join", body={"token": "x", "worker_id": "w1", "csr_pem": "x"}
    )
    assert (status, body) == (403, {"error": "the join token is not known to this master"})
    for method, path in [
        ("GET", "/api/status"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/workers"),
        ("POST", "/api/workers"),
        ("GET", "/api/tokens"),
        ("POST", "/api/join-tokens"),
        ("DELETE", "/api/workers/w1"),
        ("GET", "/ws/telemetry"),
    ]:
        status, headers, body = await _call(master, method, path)
        assert status == 401, (method, path)
        assert headers["WWW-Authenticate"] == "Bearer"
        assert "needs an API token" in body["error"]


async def test_a_read_token_reads_and_streams_but_changes_nothing(master: Master) -> None:
    assert (await _call(master, "GET", "/api/status", master.read))[0] == 200
    status, _, document = await _call(master, "GET", "/api/openapi.json", master.read)
    assert status == 200 and "/api/join-tokens" in document["paths"]
    assert document["paths"]["/api/workers"]["get"]["security"] == [{"adminToken": []}]
    assert (await _call(master, "GET", "/api/join-tokens", master.read))[0] == 200
    status, _, body = await _call(master, "POST", "/api/join-tokens", master.read, body={})
    assert status == 403 and "scope admin" in body["error"]
    assert (await _call(master, "DELETE", "/api/workers/w1", master.read))[0] == 403
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"wss://localhost:{master.port}/ws/telemetry",
            headers={"Authorization": f"Bearer {master.read}"},
            ssl=master.tls,
        ) as ws,
    ):
        assert not ws.closed


async def test_the_session_says_the_tokens_scope(master: Master) -> None:
    assert (await _call(master, "GET", "/api/session"))[0] == 401
    for token, scope in ((master.read, "read"), (master.admin, "admin")):
        status, _, body = await _call(master, "GET", "/api/session", token)
        assert (status, body) == (200, {"secured": True, "scope": scope})


async def test_an_admin_token_does_everything(master: Master) -> None:
    status, _, created = await _call(
        master, "POST", "/api/join-tokens", master.admin, body={"uses": 1, "worker_id": "w1"}
    )
    assert status == 201
    token_id = created["info"]["token_id"]
    assert created["token"].startswith("cloudai-join.1.")
    assert created["command"] == (
        f"cloudai worker --master master.example:50051 --join {created['token']} --id w1"
    )
    status, _, listed = await _call(master, "GET", "/api/join-tokens", master.admin)
    assert [t["token_id"] for t in listed] == [token_id] and "token" not in listed[0]
    status, _, revoked = await _call(master, "DELETE", f"/api/join-tokens/{token_id}", master.admin)
    assert (status, revoked["state"]) == (200, "revoked")
    status, _, body = await _call(master, "DELETE", "/api/join-tokens/nothex", master.admin)
    assert status == 400 and "12 lower-case hex digits" in body["error"]
    status, _, body = await _call(master, "DELETE", "/api/tokens/0123456789ab", master.admin)
    assert status == 404
    status, _, body = await _call(master, "DELETE", "/api/workers/w9", master.admin)
    assert (status, body) == (404, {"error": "unknown worker 'w9'"})


@pytest.mark.parametrize("how", ["query", "cookie"])
async def test_websocket_tokens_by_query_and_cookie(master: Master, how: str) -> None:
    url = f"wss://127.0.0.1:{master.port}/ws/telemetry/w1"
    kwargs: dict[str, Any] = {}
    if how == "query":
        url += f"?token={master.read}"
    else:
        kwargs["headers"] = {"Cookie": f"cloudai_token={master.read}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, ssl=master.tls, **kwargs) as ws,
    ):
        assert not ws.closed
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url.split("?")[0] + "?token=cloudai.x.y", ssl=master.tls)
        assert info.value.status == 401


async def test_wrong_tokens_are_refused_429_after_the_limit(master: Master) -> None:
    wrong = "cloudai.0123456789ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    for _ in range(MAX_FAILURES):
        status, _, body = await _call(master, "GET", "/api/status", wrong)
        assert status == 401 and "not accepted" in body["error"]
    status, headers, body = await _call(master, "GET", "/api/status", master.admin)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert "too many failed authentications" in body["error"]
    assert (await _call(master, "GET", "/health"))[0] == 200  # open calls stay open


async def test_revoked_and_expired_tokens_stop_working(master: Master) -> None:
    info, text = await master.access.create_api_token(Scope.READ, "short", None)
    assert (await _call(master, "GET", "/api/status", text))[0] == 200
    await master.access.revoke_api_token(info.token_id)
    assert (await _call(master, "GET", "/api/status", text))[0] == 401


async def test_plain_http_to_the_tls_port_fails(master: Master) -> None:
    with pytest.raises(ApiError) as info:
        await asyncio.to_thread(ApiClient(f"http://127.0.0.1:{master.port}", master.admin).status)
    assert "https://" in info.value.message and info.value.unreachable
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{master.port}/health") as response:
                await response.read()


async def test_the_client_checks_the_certificate(master: Master, tmp_path: Path) -> None:
    client = master.client(master.read)
    assert (await asyncio.to_thread(client.status)).workers == 0
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.create_ca().cert_pem)
    untrusted = ApiClient(master.url, master.read, ca_file=other)
    with pytest.raises(ApiError, match="not trusted"):
        await asyncio.to_thread(untrusted.status)
    # A certificate of the cluster CA for another host name: refused as well.
    leaf = pki.issue_master(master.ca, ["elsewhere.example"])
    (tmp_path / "other.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "other.key").write_bytes(leaf.key_pem)
    app = web.Application()
    app.router.add_get("/api/status", _empty)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    context = server_ssl_context(tmp_path / "other.pem", tmp_path / "other.key")
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        port = int(runner.addresses[0][1])
        wrong_host = ApiClient(f"https://127.0.0.1:{port}", master.read, ca_file=master.ca_file)
        with pytest.raises(ApiError, match=r"not trusted: .*mismatch"):
            await asyncio.to_thread(wrong_host.status)
    finally:
        await runner.cleanup()


async def _empty(request: web.Request) -> web.Response:
    return web.json_response({})


# -- the commands -----------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_token_commands(master: Master, capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli(capsys)
    conn = ("--url", master.url, "--ca", str(master.ca_file), "--token", master.admin)
    code, out, err = await cli("token", "create", "--ttl", "1h", "--uses", "2", *conn)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("cloudai-join.1.") and "\n" not in token
    assert "cloudai worker --master master.example:50051 --join " + token in err
    assert "2 joins" in err and "expires in" in err
    code, out, err = await cli("token", "list", "--plain", *conn)
    lines = out.splitlines()
    assert code == 0 and lines[1].split("\t")[1:4] == ["active", "0", "2"]
    token_id = lines[1].split("\t")[0]
    code, out, _ = await cli("token", "revoke", token_id, *conn)
    assert code == 0 and f"join token {token_id} revoked" in out
    code, out, _ = await cli("token", "list", "--json", *conn)
    assert orjson.loads(out)[0]["state"] == "revoked"
    code, _, err = await cli("token", "revoke", "0123456789ab", *conn)
    assert code == 1 and err.startswith("error: ")

    code, out, err = await cli("api-token", "create", "--scope", "read", "--name", "ci", *conn)
    assert code == 0 and out.startswith("cloudai.") and "scope read" in err
    reader = out.strip()
    code, out, _ = await cli("api-token", "list", *conn)
    assert code == 0 and "ci" in out and "test admin" in out
    read_conn = ("--url", master.url, "--ca", str(master.ca_file), "--token", reader)
    code, _, err = await cli("token", "create", *read_conn)
    assert code == 1 and "scope admin" in err
    assert (await cli("status", *read_conn))[0] == 0


async def test_login(
    master: Master, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[worker]\nport = 1\n")
    monkeypatch.setenv("CLOUDAI_CONFIG", str(config))
    cli = _cli(capsys)
    code, _, err = await cli(
        "login", "--url", master.url, "--ca", str(master.ca_file), "--token", "cloudai.x.y"
    )
    assert code == 1 and "not accepted" in err
    assert config.read_text() == "[worker]\nport = 1\n"  # nothing written
    code, out, err = await cli(
        "login", "--url", master.url, "--ca", str(master.ca_file), "--token", master.read
    )
    assert code == 0, err
    assert f"logged in to {master.url}" in out
    assert tomllib.loads(config.read_text()) == {
        "worker": {"port": 1},
        "client": {"url": master.url, "admin_token": master.read, "ca_file": str(master.ca_file)},
    }
    assert config.stat().st_mode & 0o777 == 0o600
    code, out, _ = await cli("status", "--json")  # from the config file now
    assert code == 0 and orjson.loads(out)["workers"] == 0
