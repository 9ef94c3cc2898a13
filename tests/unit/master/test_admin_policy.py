"""Who may call what on the master's HTTP port (``http_auth``: tokens; ``admin_api``: the
historic rule of ``--insecure``) and the refusals, without a server (no socket is
opened); over real TLS in tests/integration/test_http_auth.py."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from cloudai.api.errors import describe
from cloudai.api.models import TaskFilter, TaskSubmission, WorkerRegistration
from cloudai.master.admin_api import (
    API_KEY,
    Refusal,
    _Api,
    api_middleware,
    check_admin,
    is_loopback,
    refusal_status,
    task_filter,
)
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind
from cloudai.master.http_auth import (
    AUTH_KEY,
    BAD_TOKEN,
    NEEDS_ADMIN,
    HttpAuth,
    Verdict,
    auth_middleware,
    bearer_token,
    decide,
    install_auth,
    is_secured,
    presented_token,
    required_scope,
    retry_after,
    server_ssl_context,
)
from cloudai.security import pki
from cloudai.security.limiter import FailureLimiter, LogOnce
from cloudai.security.tokens import Scope
from cloudai.task_status import TaskStatus


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.8.9.1", "::1"])
def test_loopback(remote: str) -> None:
    assert is_loopback(remote)


@pytest.mark.parametrize("remote", ["10.0.0.1", "192.168.1.2", "8.8.8.8", "", None, "junk"])
def test_not_loopback(remote: str | None) -> None:
    assert not is_loopback(remote)


def test_reads_are_always_allowed() -> None:
    assert check_admin("GET", "203.0.113.9", None, "secret") is None
    assert check_admin("GET", "203.0.113.9", None, None) is None


def test_without_token_mutations_only_from_loopback() -> None:
    assert check_admin("POST", "127.0.0.1", None, None) is None
    assert "loopback" in (check_admin("POST", "203.0.113.9", None, None) or "")
    assert check_admin("DELETE", "203.0.113.9", "Bearer anything", None) is not None


def test_with_token_everyone_needs_it() -> None:
    assert check_admin("POST", "203.0.113.9", "Bearer secret", "secret") is None
    assert check_admin("POST", "203.0.113.9", "bearer secret", "secret") is None
    assert check_admin("POST", "203.0.113.9", None, "secret") is not None
    assert check_admin("POST", "203.0.113.9", "Bearer wrong", "secret") is not None
    assert check_admin("POST", "127.0.0.1", None, "secret") is not None  # loopback too
    assert check_admin("DELETE", "203.0.113.9", "Basic secret", "secret") is not None


# -- refusals: one JSON shape, a fitting status ---------------------------------------------


def test_a_token_answers_401_without_one_403() -> None:
    assert refusal_status("secret") == 401
    assert refusal_status(None) == 403


def _problem(model: type[BaseModel], body: bytes) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(body)
    return describe(info.value, model)


def test_validation_errors_in_one_line() -> None:
    assert _problem(WorkerRegistration, b'{"worker_id": "w1", "adress": "x:1"}') == (
        "unknown field 'adress' (known: worker_id, address)"
    )
    assert _problem(WorkerRegistration, b"{nope").startswith("the body is not valid JSON: ")
    assert _problem(WorkerRegistration, b"").startswith("the body is not valid JSON: ")
    assert _problem(WorkerRegistration, b"[1]") == "the body must be a JSON object"
    assert _problem(WorkerRegistration, b"{}") == "worker_id is required"
    assert _problem(WorkerRegistration, b'{"worker_id": "bad/id"}').startswith(
        "worker_id 'bad/id' has invalid characters"
    )
    assert _problem(TaskSubmission, b'{"worker_id": "w", "req_cpu": "2", "command": "x"}') == (
        "req_cpu: input should be a valid number"
    )
    assert _problem(TaskSubmission, b'{"worker_id": "w"}') == (
        "a task needs a docker_image or a command"
    )
    assert _problem(TaskSubmission, b'{"worker_id": 1, "req_gpu": -1}').endswith(
        "(and 1 more problem)"
    )
    for text in (_problem(TaskSubmission, b'{"command": "x\\ny"}'),):
        assert "\n" not in text


def _query(query: str) -> TaskFilter:
    return task_filter(make_mocked_request("GET", f"/api/tasks?{query}"))


def test_the_task_query_is_checked() -> None:
    assert _query("") == TaskFilter()
    assert _query("status=running&worker_id=w1") == TaskFilter(
        status=TaskStatus.RUNNING, worker_id="w1"
    )
    with pytest.raises(Refusal) as info:
        _query("status=bogus")
    assert info.value.status == 400
    assert info.value.message == (
        "status must be one of 'queued', 'assigned', 'running', 'success', 'failure', "
        "'cancelled', 'rejected', 'lost' or 'timed_out', got 'bogus'"
    )
    with pytest.raises(Refusal, match="worker_id 'a b' has invalid characters"):
        _query("worker_id=a%20b")
    with pytest.raises(Refusal, match="status is given 2 times"):
        _query("status=running&status=queued")


async def _through_middleware(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    method: str = "GET",
    path: str = "/api/tasks/t1",
    token: str | None = None,
    headers: dict[str, str] | None = None,
    secured: bool = False,
) -> web.Response:
    app = web.Application()
    app[API_KEY] = _Api(cast(ClusterAdmin, object()), token)
    if secured:
        install_auth(app, lambda text: None)
    request = make_mocked_request(method, path, headers=headers, app=app)
    response = await api_middleware(request, handler)
    assert isinstance(response, web.Response)
    assert response.content_type == "application/json"
    return response


def _error(response: web.Response) -> str:
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    assert list(body) == ["error"]
    return str(body["error"])


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ErrorKind.INVALID, 400),
        (ErrorKind.NOT_FOUND, 404),
        (ErrorKind.CONFLICT, 409),
        (ErrorKind.UNAVAILABLE, 503),
        (ErrorKind.UNAUTHORIZED, 403),
    ],
)
async def test_admin_refusals_become_statuses(kind: ErrorKind, status: int) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise AdminError(kind, "no")

    response = await _through_middleware(refuse)
    assert (response.status, _error(response)) == (status, "no")


async def test_unexpected_errors_are_json_500_without_a_traceback() -> None:
    async def crash(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret internals")

    response = await _through_middleware(crash)
    assert response.status == 500
    assert _error(response) == "internal error in the master (see its log)"


async def test_aiohttp_errors_become_json() -> None:
    async def too_big(request: web.Request) -> web.StreamResponse:
        raise web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2)

    auth = {"Authorization": "Bearer secret"}
    response = await _through_middleware(too_big, "POST", "/api/tasks", "secret", auth)
    assert response.status == 413 and "1 MiB" in _error(response)


async def test_mutations_are_refused_before_the_handler() -> None:
    async def never(request: web.Request) -> web.StreamResponse:
        raise AssertionError("the handler ran")

    response = await _through_middleware(never, "POST", "/api/tasks", token="secret")
    assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert "admin token" in _error(response)
    auth = {"Authorization": "Bearer secret"}

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204, content_type="application/json")

    response = await _through_middleware(ok, "POST", "/api/tasks", token="secret", headers=auth)
    assert response.status == 204


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, content_type="application/json")


async def test_with_tokens_the_historic_rule_steps_aside() -> None:
    """``http_auth`` decides (its middleware runs first); the admin API does not refuse a
    mutation for not coming from loopback."""
    response = await _through_middleware(_ok, "POST", "/api/tasks", secured=True)
    assert response.status == 204


async def test_the_join_is_open_in_either_mode() -> None:
    assert (await _through_middleware(_ok, "POST", "/api/join")).status == 204
    assert (await _through_middleware(_ok, "POST", "/api/join", token="secret")).status == 204
    response = await _through_middleware(_ok, "POST", "/api/join-tokens")  # not loopback
    assert response.status == 403


# -- tokens: the policy of http_auth ---------------------------------------------------------

READ, ADMIN = Scope.READ, Scope.ADMIN
A, U, F = Verdict.ALLOWED, Verdict.UNAUTHENTICATED, Verdict.FORBIDDEN


@pytest.mark.parametrize(
    ("method", "path", "none", "read", "admin"),
    [
        ("GET", "/health", A, A, A),
        ("HEAD", "/health", A, A, A),
        ("POST", "/api/join", A, A, A),
        ("GET", "/ws/telemetry", U, A, A),
        ("GET", "/ws/telemetry/w1", U, A, A),
        ("GET", "/ws/telemetry/{worker_id}", U, A, A),
        ("GET", "/api/status", U, A, A),
        ("GET", "/api/openapi.json", U, A, A),
        ("HEAD", "/api/workers", U, A, A),
        ("GET", "/api/tokens", U, A, A),
        ("POST", "/api/workers", U, F, A),
        ("DELETE", "/api/workers/w1", U, F, A),
        ("POST", "/api/tasks/t1/cancel", U, F, A),
        ("POST", "/api/join-tokens", U, F, A),
        ("DELETE", "/api/tokens/{token_id}", U, F, A),
        ("POST", "/api/tokens", U, F, A),
        ("POST", "/health", U, F, A),  # only the GET is open
        ("GET", "/api/join", U, A, A),  # only the POST is open
        ("GET", "/ws/telemetryx", U, F, A),  # not the stream: anything else needs admin
        ("GET", "/other", U, F, A),
        ("PUT", "/api/status", U, F, A),
    ],
)
def test_the_policy(method: str, path: str, none: Verdict, read: Verdict, admin: Verdict) -> None:
    assert (
        decide(method, path, None),
        decide(method, path, READ),
        decide(method, path, ADMIN),
    ) == (
        none,
        read,
        admin,
    )


def test_required_scopes() -> None:
    assert required_scope("GET", "/health") is None
    assert required_scope("get", "/api/workers") is READ
    assert required_scope("POST", "/api/workers") is ADMIN
    assert Verdict.UNAUTHENTICATED == 401 and Verdict.FORBIDDEN == 403


def test_bearer_tokens() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token("") is None
    assert bearer_token(None) is None


def test_where_a_token_may_be() -> None:
    header = {"Authorization": "Bearer h"}
    query, cookie = {"token": "q"}, {"cloudai_token": "c"}
    assert presented_token(header, query, cookie, stream=True) == "h"
    assert presented_token({}, query, cookie, stream=True) == "q"
    assert presented_token({}, {}, cookie, stream=True) == "c"
    assert presented_token({}, {"token": ""}, {}, stream=True) is None
    # The API takes the header only (a token in a URL ends up in logs and histories).
    assert presented_token({}, query, cookie, stream=False) is None
    assert presented_token(header, query, cookie, stream=False) == "h"


@pytest.mark.parametrize(("wait", "header"), [(0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds(wait: float, header: str) -> None:
    assert retry_after(wait) == header


# -- the middleware ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TOKENS = {"r": READ, "a": ADMIN}


def _app(clock: Clock, max_failures: int = 3) -> web.Application:
    app = web.Application()
    limiter = FailureLimiter(max_failures, 60.0, clock=clock)
    install_auth(app, TOKENS.get, limiter, LogOnce(60.0, clock=clock))
    return app


async def _handled(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _route(app: web.Application, method: str, path: str) -> None:
    app.router.add_route(method, path, _handled)


async def _authorised(
    app: web.Application,
    method: str,
    path: str,
    token: str | None = None,
    remote: str = "203.0.113.9",
    headers: dict[str, str] | None = None,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = _handled,
) -> web.Response:
    sent = CIMultiDict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = make_mocked_request(method, path, headers=sent, app=app)
    match = await app.router.resolve(request)
    request._match_info = match  # what aiohttp's request handler does before middlewares
    match.add_app(app)
    request = request.clone(remote=remote)
    response = await auth_middleware(request, handler)
    assert isinstance(response, web.Response)
    return response


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guarded(clock: Clock) -> web.Application:
    app = _app(clock)
    for method, path in [
        ("GET", "/health"),
        ("POST", "/api/join"),
        ("GET", "/api/status"),
        ("POST", "/api/workers"),
        ("GET", "/ws/telemetry/{worker_id}"),
    ]:
        _route(app, method, path)
    return app


async def test_open_calls_need_nothing(guarded: web.Application) -> None:
    assert (await _authorised(guarded, "GET", "/health")).status == 200
    assert (await _authorised(guarded, "POST", "/api/join", token="wrong")).status == 200


async def test_without_a_token_401_with_www_authenticate(guarded: web.Application) -> None:
    for method, path in [("GET", "/api/status"), ("POST", "/api/workers")]:
        response = await _authorised(guarded, method, path)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "needs an API token" in _error(response)


async def test_scopes(guarded: web.Application) -> None:
    assert (await _authorised(guarded, "GET", "/api/status", "r")).status == 200
    assert (await _authorised(guarded, "GET", "/api/status", "a")).status == 200
    assert (await _authorised(guarded, "POST", "/api/workers", "a")).status == 200
    response = await _authorised(guarded, "POST", "/api/workers", "r")
    assert (response.status, _error(response)) == (403, NEEDS_ADMIN)
    assert "WWW-Authenticate" not in response.headers


async def test_websocket_tokens_by_query_and_cookie(guarded: web.Application) -> None:
    assert (await _authorised(guarded, "GET", "/ws/telemetry/w1?token=r")).status == 200
    cookie = {"Cookie": "cloudai_token=r"}
    assert (await _authorised(guarded, "GET", "/ws/telemetry/w1", headers=cookie)).status == 200
    assert (await _authorised(guarded, "GET", "/ws/telemetry/w1?token=nope")).status == 401
    assert (
        await _authorised(guarded, "GET", "/api/status?token=r")
    ).status == 401  # not for the API


async def test_unknown_routes_are_the_routers_answer(guarded: web.Application) -> None:
    async def not_found(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    with pytest.raises(web.HTTPNotFound):  # passed on to the handler: 404, not 401
        await _authorised(guarded, "GET", "/api/nothing", handler=not_found)


async def test_wrong_tokens_are_limited_per_peer(
    guarded: web.Application, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "cloudai.master.http_auth")
    for _ in range(3):
        response = await _authorised(guarded, "GET", "/api/status", "wrong")
        assert (response.status, _error(response)) == (401, BAD_TOKEN)
    blocked = await _authorised(guarded, "GET", "/api/status", "a")  # a good token waits too
    assert blocked.status == 429
    assert blocked.headers["Retry-After"] == "60"
    assert "too many failed authentications" in _error(blocked)
    # Another peer is not affected; open calls stay open.
    assert (
        await _authorised(guarded, "GET", "/api/status", "a", remote="198.51.100.1")
    ).status == 200
    assert (await _authorised(guarded, "GET", "/health")).status == 200
    # No token at all is not a guess: not counted.
    clock.now += 61
    for _ in range(5):
        assert (await _authorised(guarded, "GET", "/api/status")).status == 401
    assert (await _authorised(guarded, "GET", "/api/status", "a")).status == 200
    # Logged once a minute per peer, one line, no traceback.
    lines = [r for r in caplog.records if r.name == "cloudai.master.http_auth"]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "203.0.113.9" in lines[0].getMessage() and "wrong" not in lines[0].getMessage()


async def test_a_success_forgets_the_failures(guarded: web.Application) -> None:
    for _ in range(10):
        assert (await _authorised(guarded, "GET", "/api/status", "wrong")).status == 401
        assert (await _authorised(guarded, "GET", "/api/status", "r")).status == 200


def test_install_auth() -> None:
    app = web.Application()
    install_auth(app, None)  # --insecure: nothing changes
    assert not is_secured(app) and auth_middleware not in app.middlewares
    install_auth(app, TOKENS.get)
    assert is_secured(app) and app.middlewares[0] is auth_middleware
    assert isinstance(app[AUTH_KEY], HttpAuth)


def test_server_ssl_context(tmp_path: Path) -> None:
    ca = pki.create_ca()
    master = pki.issue_master(ca, ["localhost", "127.0.0.1"])
    cert, key = tmp_path / "master.pem", tmp_path / "master.key"
    cert.write_bytes(master.cert_pem)
    key.write_bytes(master.key_pem)
    context = server_ssl_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    with pytest.raises(ssl.SSLError):
        server_ssl_context(cert, cert)  # not a key
