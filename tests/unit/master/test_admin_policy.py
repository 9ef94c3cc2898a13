"""The admin API's policy and its refusals, without a server (no socket is opened)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
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
        "'cancelled' or 'rejected', got 'bogus'"
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
) -> web.Response:
    app = web.Application()
    app[API_KEY] = _Api(cast(ClusterAdmin, object()), token)
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
