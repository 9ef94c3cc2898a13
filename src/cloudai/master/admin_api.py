"""Admin JSON API on the master's HTTP port (``/api/...``), with its OpenAPI document.

Each operation is described once in ``OPERATIONS`` (path, method, parameters, request
model, every status code with its response model); that list registers the routes and
generates the document served at ``GET /api/openapi.json`` (``master/openapi.py``).
Bodies and query values are validated by the models of ``cloudai.api.models``; the
handlers call ``ClusterAdmin`` and answer with its response models.

Mutating calls (POST/DELETE) need ``Authorization: Bearer <CLOUDAI_ADMIN_TOKEN>``; when
no token is configured they are accepted from loopback only. Every error on ``/api/*``
(and ``/health``) is JSON ``{"error": "one line"}`` with a fitting status code: unknown
paths (404), methods (405, with ``Allow``), bodies over 1 MiB (413) included.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from cloudai.api.errors import describe
from cloudai.api.models import (
    ClusterSummary,
    ErrorBody,
    Health,
    Identifier,
    Request,
    Task,
    TaskFilter,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerRegistration,
)
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind
from cloudai.master.openapi import Operation, Param, Reply, build_document
from cloudai.task_status import TaskStatus

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY_BYTES = 1024 * 1024
"""The largest request body accepted (413 above it)."""
API_VERSION = "1"

_KIND_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
}
_WORKERS: TypeAdapter[list[Worker]] = TypeAdapter(list[Worker])
_TASKS: TypeAdapter[list[Task]] = TypeAdapter(list[Task])
R = TypeVar("R", bound=Request)


@dataclass(frozen=True, slots=True)
class _Api:
    admin: ClusterAdmin
    token: str | None


API_KEY = web.AppKey("admin_api", _Api)


class Refusal(Exception):
    """An answer other than success: the status code and one line of text."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# -- policy -----------------------------------------------------------------------------------


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def check_admin(
    method: str, remote: str | None, authorization: str | None, token: str | None
) -> str | None:
    """Why a request is refused (None: allowed). Pure, so the policy is unit-tested."""
    if method not in MUTATING:
        return None
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return None
        return "this call needs the admin token: Authorization: Bearer $CLOUDAI_ADMIN_TOKEN"
    if is_loopback(remote):
        return None
    return "mutating calls are accepted from loopback only unless CLOUDAI_ADMIN_TOKEN is set"


def refusal_status(token: str | None) -> int:
    """401 when a token is configured (send it), 403 otherwise (call from loopback)."""
    return 401 if token else 403


# -- JSON in and out --------------------------------------------------------------------------


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=ErrorBody(error=message).model_dump_json().encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )


def list_response(adapter: TypeAdapter[Any], items: list[Any]) -> web.Response:
    return web.Response(body=adapter.dump_json(items), content_type="application/json")


async def read_body(request: web.Request, model: type[R]) -> R:
    """The request body as ``model``: 413 past MAX_BODY_BYTES, 400 if it does not fit.

    The body is read as JSON whatever its Content-Type says (``curl -d`` sends
    ``application/x-www-form-urlencoded``)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refusal(413, _too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, _too_large())
        chunks.append(chunk)
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise Refusal(400, describe(exc, model)) from None


def _too_large() -> str:
    return f"the body is larger than the limit of {_size(MAX_BODY_BYTES)}"


def _size(count: int) -> str:
    return f"{count // 1024**2} MiB" if count % 1024**2 == 0 else f"{count // 1024} KiB"


def task_filter(request: web.Request) -> TaskFilter:
    """The query of GET /api/tasks, validated (400 naming the valid values)."""
    values: dict[str, str] = {}
    for name in TaskFilter.model_fields:
        given = request.query.getall(name, [])
        if len(given) > 1:
            raise Refusal(400, f"{name} is given {len(given)} times; give it once")
        if given:
            values[name] = given[0]
    try:
        return TaskFilter.model_validate(values)
    except ValidationError as exc:
        raise Refusal(400, describe(exc)) from None


# -- middleware -------------------------------------------------------------------------------


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path == "/health"


def _shown_path(request: web.Request) -> str:
    """The path as sent (still %-encoded: one line, whatever it holds), cut if long."""
    path = request.rel_url.raw_path
    return path if len(path) <= 200 else path[:197] + "..."


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    path = _shown_path(request)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            f"method {request.method} is not allowed on {path} (allowed: {allowed})",
            {"Allow": allowed},
        )
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, f"no such endpoint: {request.method} {path}")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, _too_large())
    return error_response(exc.status, exc.reason or f"HTTP {exc.status}")


@web.middleware
async def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing errors, the admin policy and every refusal as JSON ``{"error"}``."""
    if not _is_api(request.path):
        return await handler(request)
    try:
        routing = request.match_info.http_exception
        if routing is not None:  # unknown path or method: say so before asking for a token
            return _from_http_exception(request, routing)
        token = request.app[API_KEY].token
        refusal = check_admin(
            request.method, request.remote, request.headers.get("Authorization"), token
        )
        if refusal is not None:
            status = refusal_status(token)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return error_response(status, refusal, headers)
        return await handler(request)
    except Refusal as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except AdminError as exc:
        return error_response(_KIND_STATUS[exc.kind], exc.message)
    except web.HTTPException as exc:
        return _from_http_exception(request, exc)
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error_response(500, "internal error in the master (see its log)")


# -- handlers ---------------------------------------------------------------------------------


def _admin(request: web.Request) -> ClusterAdmin:
    return request.app[API_KEY].admin


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return model_response(_admin(request).summary())


async def list_workers(request: web.Request) -> web.Response:
    return list_response(_WORKERS, _admin(request).list_workers())


async def get_worker(request: web.Request) -> web.Response:
    return model_response(_admin(request).get_worker(request.match_info["worker_id"]))


async def register_worker(request: web.Request) -> web.Response:
    registration = await read_body(request, WorkerRegistration)
    return model_response(_admin(request).authorise_worker(registration), status=201)


async def unregister_worker(request: web.Request) -> web.Response:
    _admin(request).revoke_worker(request.match_info["worker_id"])
    return web.Response(status=204)


async def list_tasks(request: web.Request) -> web.Response:
    query = task_filter(request)
    tasks = _admin(request).list_tasks(status=query.status, worker_id=query.worker_id)
    return list_response(_TASKS, tasks)


async def submit_task(request: web.Request) -> web.Response:
    submission = await read_body(request, TaskSubmission)
    task = await _admin(request).submit_task(submission)
    return model_response(task, status=422 if task.status is TaskStatus.REJECTED else 201)


async def get_task(request: web.Request) -> web.Response:
    return model_response(_admin(request).get_task(request.match_info["task_id"]))


async def cancel_task(request: web.Request) -> web.Response:
    return model_response(await _admin(request).cancel_task(request.match_info["task_id"]), 202)


async def task_logs(request: web.Request) -> web.Response:
    return model_response(_admin(request).task_logs(request.match_info["task_id"]))


# -- the operations ---------------------------------------------------------------------------

_ERROR_TEXT = {
    400: "Invalid input: a body or query value that does not fit the schema, or a value "
    "the master refuses",
    401: "The admin token is configured on the master and the call did not carry it",
    403: "No admin token is configured and the call did not come from loopback",
    404: "No such worker or task",
    409: "Conflict with the current state",
    413: f"The body is larger than {_size(MAX_BODY_BYTES)}",
    503: "The worker is not registered or did not answer",
}


def _errors(*codes: int, **texts: str) -> dict[int, Reply]:
    """Error replies: ``_errors(400, 404, e409="...")`` (a text replaces the default)."""
    out: dict[int, Reply] = {}
    for code in codes:
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
        out[code] = Reply(texts.get(f"e{code}", _ERROR_TEXT[code]), ErrorBody, headers)
    return out


_MUTATION = (401, 403)
_WORKER_ID = Param("worker_id", "path", Identifier, "the worker's id")
_TASK_ID = Param("task_id", "path", Identifier, "the task's id")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/health",
        "health",
        "Liveness and counts",
        {200: Reply("The master is up", Health)},
    ),
    Operation(
        "GET",
        "/api/openapi.json",
        "openapi",
        "This document",
        {200: Reply("The OpenAPI 3.1 document", dict[str, Any])},
        handler=openapi,
    ),
    Operation(
        "GET",
        "/api/status",
        "clusterSummary",
        "Cluster summary: workers, tasks, heartbeat ingest rate",
        {200: Reply("The summary", ClusterSummary)},
        handler=status,
    ),
    Operation(
        "GET",
        "/api/workers",
        "listWorkers",
        "Every worker: registry entry and latest telemetry",
        {200: Reply("The workers", list[Worker])},
        handler=list_workers,
    ),
    Operation(
        "POST",
        "/api/workers",
        "registerWorker",
        "Register (authorise) a worker",
        {
            201: Reply("Authorised", Worker),
            **_errors(400, *_MUTATION, 413),
        },
        handler=register_worker,
        body=WorkerRegistration,
        secured=True,
        description="With an address, the master then calls the worker's MasterRegister "
        "(retried with back-off until it answers); without one, the worker registers itself.",
    ),
    Operation(
        "GET",
        "/api/workers/{worker_id}",
        "getWorker",
        "One worker",
        {200: Reply("The worker", Worker), **_errors(404)},
        handler=get_worker,
        params=(_WORKER_ID,),
    ),
    Operation(
        "DELETE",
        "/api/workers/{worker_id}",
        "unregisterWorker",
        "Unregister a worker (its heartbeats are refused from then on)",
        {204: Reply("Unregistered"), **_errors(*_MUTATION, 404)},
        handler=unregister_worker,
        params=(_WORKER_ID,),
        secured=True,
    ),
    Operation(
        "GET",
        "/api/tasks",
        "listTasks",
        "Tasks, oldest first",
        {200: Reply("The tasks", list[Task]), **_errors(400)},
        handler=list_tasks,
        params=(
            Param("status", "query", TaskStatus, "only tasks in this status"),
            Param("worker_id", "query", Identifier, "only tasks of this worker"),
        ),
    ),
    Operation(
        "POST",
        "/api/tasks",
        "submitTask",
        "Submit a task to a worker",
        {
            201: Reply("Assigned to the worker", Task),
            422: Reply("Refused by the worker: the task, status rejected, and why", Task),
            **_errors(
                400,
                *_MUTATION,
                404,
                409,
                413,
                503,
                e404="No such worker",
                e409="A task with this id already exists",
            ),
        },
        handler=submit_task,
        body=TaskSubmission,
        secured=True,
        description="A task needs a docker_image, a command, or both (the command then runs "
        "in the image).",
    ),
    Operation(
        "GET",
        "/api/tasks/{task_id}",
        "getTask",
        "One task with its logs",
        {200: Reply("The task", TaskWithLogs), **_errors(404, e404="No such task")},
        handler=get_task,
        params=(_TASK_ID,),
    ),
    Operation(
        "POST",
        "/api/tasks/{task_id}/cancel",
        "cancelTask",
        "Ask the task's worker to cancel it",
        {
            202: Reply(
                "Cancellation requested; the task becomes cancelled when the worker reports back",
                Task,
            ),
            **_errors(
                *_MUTATION,
                404,
                409,
                503,
                e404="No such task",
                e409="The task already finished, or the worker refused to cancel it",
                e503="The task's worker did not answer",
            ),
        },
        handler=cancel_task,
        params=(_TASK_ID,),
        secured=True,
    ),
    Operation(
        "GET",
        "/api/tasks/{task_id}/logs",
        "taskLogs",
        "A task's status, exit code and logs",
        {200: Reply("The logs", TaskLogs), **_errors(404, e404="No such task")},
        handler=task_logs,
        params=(_TASK_ID,),
    ),
)

DESCRIPTION = """\
Admin API of a CloudAI master.

Reads (GET) are open. Mutating calls (POST, DELETE) need `Authorization: Bearer \
<CLOUDAI_ADMIN_TOKEN>` when the master has a token (401 otherwise); without a token \
configured they are accepted from loopback only (403 otherwise).

Request bodies are JSON objects of at most 1 MiB (413 above), read as JSON whatever \
their Content-Type; unknown fields and values of the wrong type are refused (400). \
Every error is `{"error": "one line"}`: also 404 for an unknown path and 405, with an \
`Allow` header, for a method a path does not serve.

Live telemetry is not part of this document: WebSocket /ws/telemetry[/{worker_id}]."""


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, generated from ``OPERATIONS``."""
    return build_document(OPERATIONS, "CloudAI master API", API_VERSION, DESCRIPTION)


@functools.cache
def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())


def add_routes(app: web.Application, admin: ClusterAdmin, admin_token: str | None) -> None:
    """Serve the admin API on ``app`` (``/health`` is served by ``http_app``)."""
    app[API_KEY] = _Api(admin, admin_token or None)
    app.middlewares.append(api_middleware)
    for op in OPERATIONS:
        if op.handler is not None:
            app.router.add_route(op.method, op.path, op.handler)
