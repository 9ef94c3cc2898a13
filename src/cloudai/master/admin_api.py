"""Admin JSON API on the master's HTTP port (``/api/...``), with its OpenAPI document.

Each operation is described once in ``OPERATIONS`` (path, method, parameters, request
model, every status code with its response model); that list registers the routes and
generates the document served at ``GET /api/openapi.json`` (``master/openapi.py``).
Bodies and query values are validated by the models of ``cloudai.api.models``; the
handlers call ``ClusterAdmin`` and answer with its response models.

Who may call what: with tokens (``http_auth.install_auth``, the default), every call but
``GET /health`` and ``POST /api/join`` needs an API token, ``read`` for GETs, ``admin``
for the rest. Without (``--insecure``), the historic rule: reads are open, mutating calls
(POST/DELETE) need ``Authorization: Bearer <CLOUDAI_ADMIN_TOKEN>``, or come from loopback
when no token is configured. The document served describes the rule in force. Every
error on ``/api/*`` (and ``/health``) is JSON ``{"error": "one line"}`` with a fitting
status code: unknown paths (404), methods (405, with ``Allow``), bodies over 1 MiB (413)
included.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter

from cloudai.addresses import join_host_port
from cloudai.api.models import (
    MAX_TASK_LIMIT,
    ApiTokenInfo,
    ApiTokenRequest,
    ClusterCa,
    ClusterSummary,
    CreatedApiToken,
    CreatedJoinToken,
    ErrorBody,
    Health,
    Identifier,
    JoinRequest,
    JoinResponse,
    JoinTokenInfo,
    JoinTokenRequest,
    SessionInfo,
    Task,
    TaskFilter,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerRegistration,
)
from cloudai.master.access import join_command
from cloudai.master.alerts_api import ALERT_OPERATIONS
from cloudai.master.api_input import (
    MAX_BODY_BYTES,
    Refusal,
    read_body,
    read_query,
    size_text,
    too_large,
)
from cloudai.master.cluster_admin import AdminError, ClusterAdmin, ErrorKind
from cloudai.master.history_api import HISTORY_OPERATIONS
from cloudai.master.http_auth import SCOPE, is_secured, required_scope
from cloudai.master.openapi import Operation, Param, Reply, build_document
from cloudai.master.output_api import OUTPUT_OPERATIONS
from cloudai.security.tokens import Scope, TokenFormatError, check_token_id
from cloudai.task_status import TaskStatus

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The largest request body accepted (413 above it)."""
API_VERSION = "1"

_KIND_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UNAUTHORIZED: 403,  # e.g. a refused join token
    ErrorKind.UNPROCESSABLE: 422,  # e.g. a join's certificate request that does not parse
    ErrorKind.GONE: 410,  # e.g. a task's output deleted past its retention
}
_WORKERS: TypeAdapter[list[Worker]] = TypeAdapter(list[Worker])
_TASKS: TypeAdapter[list[Task]] = TypeAdapter(list[Task])
_JOIN_TOKENS: TypeAdapter[list[JoinTokenInfo]] = TypeAdapter(list[JoinTokenInfo])
_API_TOKENS: TypeAdapter[list[ApiTokenInfo]] = TypeAdapter(list[ApiTokenInfo])

Join = Callable[[JoinRequest, str], Awaitable[JoinResponse]]
"""The join use case: the request and the peer's address -> the worker's certificate.
Refusals are ``AdminError``s."""
MasterAddress = Callable[[str], str]
"""The ``HOST:PORT`` a worker gives ``--master``, from the host name the admin reached
the HTTP API by."""
DEFAULT_GRPC_PORT = 50051


class Tokens(Protocol):
    """What the token endpoints need of the master's access control (``AccessControl``)."""

    async def create_join_token(
        self, ttl: float | None, uses: int | None, worker_id: str | None, description: str = ""
    ) -> tuple[JoinTokenInfo, str]: ...

    def list_join_tokens(self) -> list[JoinTokenInfo]: ...

    async def revoke_join_token(self, token_id: str) -> JoinTokenInfo: ...

    async def create_api_token(
        self, scope: Scope, name: str, ttl: float | None
    ) -> tuple[ApiTokenInfo, str]: ...

    def list_api_tokens(self) -> list[ApiTokenInfo]: ...

    async def revoke_api_token(self, token_id: str) -> ApiTokenInfo: ...


def master_address_from(host: str | None, grpc_port: Callable[[], int]) -> MasterAddress:
    """``host`` (the advertised host; None: the one the admin reached the API by) and the
    master's gRPC port, as a ``MasterAddress``."""

    def address(request_host: str) -> str:
        return join_host_port(host or request_host, grpc_port())

    return address


@dataclass(frozen=True, slots=True)
class _Api:
    admin: ClusterAdmin
    token: str | None
    tokens: Tokens | None = None
    join: Join | None = None
    master_address: MasterAddress | None = None
    cluster_ca: ClusterCa | None = None


API_KEY = web.AppKey("admin_api", _Api)


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


def _legacy_guarded(method: str, path: str) -> bool:
    """Whether the historic rule (``check_admin``) applies: mutations but the open join."""
    return method in MUTATING and required_scope(method, path) is not None


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


def task_filter(request: web.Request) -> TaskFilter:
    """The query of GET /api/tasks, validated (400 naming the valid values)."""
    return read_query(request, TaskFilter)


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
        return error_response(413, too_large())
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
        if not is_secured(request.app) and _legacy_guarded(request.method, request.path):
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


def _tokens(request: web.Request) -> Tokens:
    tokens = request.app[API_KEY].tokens
    assert tokens is not None  # the routes are only there with it
    return tokens


def _token_id(request: web.Request) -> str:
    try:
        return check_token_id(request.match_info["token_id"])
    except TokenFormatError as exc:
        raise Refusal(400, str(exc)) from None


async def openapi(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    body = openapi_json(is_secured(request.app), api.tokens is not None, api.join is not None)
    return web.Response(body=body, content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return model_response(_admin(request).summary())


async def session(request: web.Request) -> web.Response:
    scope = request.get(SCOPE)
    return model_response(SessionInfo(secured=is_secured(request.app), scope=scope))


async def list_workers(request: web.Request) -> web.Response:
    return list_response(_WORKERS, _admin(request).list_workers())


async def get_worker(request: web.Request) -> web.Response:
    return model_response(_admin(request).get_worker(request.match_info["worker_id"]))


async def register_worker(request: web.Request) -> web.Response:
    registration = await read_body(request, WorkerRegistration)
    return model_response(await _admin(request).authorise_worker(registration), status=201)


async def unregister_worker(request: web.Request) -> web.Response:
    await _admin(request).revoke_worker(request.match_info["worker_id"])
    return web.Response(status=204)


async def list_tasks(request: web.Request) -> web.Response:
    query = task_filter(request)
    tasks = _admin(request).list_tasks(
        status=query.status, worker_id=query.worker_id, limit=query.limit
    )
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


async def create_join_token(request: web.Request) -> web.Response:
    body = await read_body(request, JoinTokenRequest)
    info, text = await _tokens(request).create_join_token(
        body.ttl_seconds, body.uses, body.worker_id, body.description
    )
    master = request.app[API_KEY].master_address or master_address_from(
        None, lambda: DEFAULT_GRPC_PORT
    )
    command = join_command(text, master(request.url.host or "127.0.0.1"), info.worker_id)
    return model_response(CreatedJoinToken(token=text, info=info, command=command), 201)


async def list_join_tokens(request: web.Request) -> web.Response:
    return list_response(_JOIN_TOKENS, _tokens(request).list_join_tokens())


async def revoke_join_token(request: web.Request) -> web.Response:
    return model_response(await _tokens(request).revoke_join_token(_token_id(request)))


async def create_api_token(request: web.Request) -> web.Response:
    body = await read_body(request, ApiTokenRequest)
    info, text = await _tokens(request).create_api_token(body.scope, body.name, body.ttl_seconds)
    return model_response(CreatedApiToken(token=text, info=info), 201)


async def list_api_tokens(request: web.Request) -> web.Response:
    return list_response(_API_TOKENS, _tokens(request).list_api_tokens())


async def revoke_api_token(request: web.Request) -> web.Response:
    return model_response(await _tokens(request).revoke_api_token(_token_id(request)))


async def cluster_ca(request: web.Request) -> web.Response:
    ca = request.app[API_KEY].cluster_ca
    assert ca is not None  # the route is only there with it
    return model_response(ca)


async def join(request: web.Request) -> web.Response:
    body = await read_body(request, JoinRequest)
    use_case = request.app[API_KEY].join
    assert use_case is not None  # the route is only there with it
    return model_response(await use_case(body, request.remote or "?"))


# -- the operations ---------------------------------------------------------------------------

_ERROR_TEXT = {
    400: "Invalid input: a body or query value that does not fit the schema, or a value "
    "the master refuses",
    401: "The admin token is configured on the master and the call did not carry it",
    403: "No admin token is configured and the call did not come from loopback",
    404: "No such worker or task",
    409: "Conflict with the current state",
    422: "Well-formed, but not something the master can use",
    413: f"The body is larger than {size_text(MAX_BODY_BYTES)}",
    429: "Too many failed authentications from this address: try again after Retry-After seconds",
    503: "The worker is not registered or did not answer",
}
_NOT_STORED = "The store did not commit the change within 10 s (it is written when it can be)"
_SECURE_TEXT = {
    401: "No API token, or one this master does not accept (unknown, expired or revoked)",
    403: "The token has scope read; this call needs a token of scope admin",
}


def _errors(*codes: int, **texts: str) -> dict[int, Reply]:
    """Error replies: ``_errors(400, 404, e409="...")`` (a text replaces the default)."""
    out: dict[int, Reply] = {}
    for code in codes:
        headers = _ERROR_HEADERS.get(code, {})
        out[code] = Reply(texts.get(f"e{code}", _ERROR_TEXT[code]), ErrorBody, headers)
    return out


_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "seconds to wait before the next attempt"},
}
_WORKER_ID = Param("worker_id", "path", Identifier, "the worker's id")
_TASK_ID = Param("task_id", "path", Identifier, "the task's id")
TokenId = Annotated[
    str,
    Field(pattern="^[0-9a-f]{12}$", description="12 lower-case hex digits"),
]
_TOKEN_ID = Param("token_id", "path", TokenId, "the token's id (as listed)")

CORE_OPERATIONS: tuple[Operation, ...] = (
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
        "/api/session",
        "session",
        "What the caller may do: the scope of the API token it gave",
        {200: Reply("Whether tokens are required, and the scope of this call's", SessionInfo)},
        handler=session,
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
            201: Reply("Authorised and stored", Worker),
            **_errors(400, 413, 503, e503=_NOT_STORED),
        },
        handler=register_worker,
        body=WorkerRegistration,
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
        {204: Reply("Unregistered and stored"), **_errors(404, 503, e503=_NOT_STORED)},
        handler=unregister_worker,
        params=(_WORKER_ID,),
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
            Param(
                "limit",
                "query",
                Annotated[int, Field(ge=1, le=MAX_TASK_LIMIT)],
                "only the newest this many (still listed oldest first)",
            ),
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

_NO_FREE_ID = "No free token id was found (very unlikely): try again"

TOKEN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/api/join-tokens",
        "createJoinToken",
        "Create a join token: it lets machines join the cluster as workers",
        {
            201: Reply(
                "Created: the token's text (shown once), its entry, and the command that "
                "makes a machine join with it",
                CreatedJoinToken,
            ),
            **_errors(400, 409, 413, e409=_NO_FREE_ID),
        },
        handler=create_join_token,
        body=JoinTokenRequest,
        description="The token carries the cluster CA's fingerprint and the master's "
        "HTTPS port; a worker started with `cloudai worker --master HOST:PORT --join TOKEN` "
        "sends it to POST /api/join. Only its hash is kept: its text is in this answer "
        "and nowhere else.",
    ),
    Operation(
        "GET",
        "/api/join-tokens",
        "listJoinTokens",
        "Every join token, with its state and uses (never its secret)",
        {200: Reply("The join tokens", list[JoinTokenInfo])},
        handler=list_join_tokens,
    ),
    Operation(
        "DELETE",
        "/api/join-tokens/{token_id}",
        "revokeJoinToken",
        "Revoke a join token: no machine joins with it any more",
        {
            200: Reply("Revoked: the token's entry", JoinTokenInfo),
            **_errors(400, 404, e400="Not a token id", e404="No such join token"),
        },
        handler=revoke_join_token,
        params=(_TOKEN_ID,),
        description="Workers that joined with it keep their certificates (unregister "
        "them to shut them out).",
    ),
    Operation(
        "POST",
        "/api/tokens",
        "createApiToken",
        "Create an API token of scope read or admin",
        {
            201: Reply("Created: the token's text (shown once) and its entry", CreatedApiToken),
            **_errors(400, 409, 413, e409=_NO_FREE_ID),
        },
        handler=create_api_token,
        body=ApiTokenRequest,
        description="read: GETs and the telemetry streams; admin: everything. Only its "
        "hash is kept: its text is in this answer and nowhere else.",
    ),
    Operation(
        "GET",
        "/api/tokens",
        "listApiTokens",
        "Every API token, with its scope and state (never its secret)",
        {200: Reply("The API tokens", list[ApiTokenInfo])},
        handler=list_api_tokens,
    ),
    Operation(
        "DELETE",
        "/api/tokens/{token_id}",
        "revokeApiToken",
        "Revoke an API token: the master refuses it from then on",
        {
            200: Reply("Revoked: the token's entry", ApiTokenInfo),
            **_errors(400, 404, e400="Not a token id", e404="No such API token"),
        },
        handler=revoke_api_token,
        params=(_TOKEN_ID,),
    ),
)

JOIN_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/ca",
        "clusterCa",
        "The cluster CA's certificate and its fingerprint",
        {200: Reply("The cluster CA", ClusterCa)},
        handler=cluster_ca,
        description="Open: a joining worker fetches it first and compares its fingerprint "
        "with the one its join token carries, before the token goes anywhere.",
    ),
    Operation(
        "POST",
        "/api/join",
        "joinCluster",
        "A worker joins: a join token and a certificate request for a signed certificate",
        {
            200: Reply("Joined: the worker's certificate and the cluster CA's", JoinResponse),
            **_errors(
                400,
                403,
                409,
                413,
                422,
                503,
                e400="Invalid input: a body that does not fit the schema",
                e422="The certificate signing request is not one the master can sign (not a "
                "PEM request, a bad signature, not a P-256 key)",
                e403="The join token is refused: unknown, expired, revoked, used up, or "
                "bound to another worker id (the message says which)",
                e409="Another live worker holds this worker id",
                e503="The master cannot take the join now",
            ),
        },
        handler=join,
        body=JoinRequest,
        description="Open: the join token is the credential. A worker calls it over HTTPS, "
        "checking the master's certificate against the CA fingerprint in the token "
        "(`cloudai worker --join TOKEN` does all of it).",
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    CORE_OPERATIONS
    + OUTPUT_OPERATIONS
    + ALERT_OPERATIONS
    + HISTORY_OPERATIONS
    + TOKEN_OPERATIONS
    + JOIN_OPERATIONS
)
"""Every operation the master may serve; which it serves depends on what it is given
(``add_routes``), and the replies on the authentication in force (``served_operations``)."""


def _secured(op: Operation, secure: bool) -> Operation:
    """``op`` with the answers and the security of the rule in force: tokens (``secure``)
    or the historic one (``--insecure``)."""
    if secure:
        needed = required_scope(op.method, op.path)
        if needed is None:
            return op
        codes = (401, 403, 429) if needed is Scope.ADMIN else (401, 429)
        replies = {**op.replies, **_errors(*codes, **{f"e{c}": t for c, t in _SECURE_TEXT.items()})}
    else:
        if not _legacy_guarded(op.method, op.path):
            return op
        replies = {**op.replies, **_errors(401, 403)}
    return dataclasses.replace(op, replies=dict(sorted(replies.items())), secured=True)


def served_operations(
    secure: bool = False, tokens: bool = False, join: bool = False
) -> tuple[Operation, ...]:
    """The operations a master serves: the core ones, the token endpoints with ``tokens``,
    ``POST /api/join`` with ``join``; their answers as ``secure`` (tokens) has them."""
    chosen = (
        CORE_OPERATIONS
        + OUTPUT_OPERATIONS
        + ALERT_OPERATIONS
        + HISTORY_OPERATIONS
        + (TOKEN_OPERATIONS if tokens else ())
        + (JOIN_OPERATIONS if join else ())
    )
    return tuple(_secured(op, secure) for op in chosen)


DESCRIPTION = """\
Admin API of a CloudAI master.

{auth}

Request bodies are JSON objects of at most 1 MiB (413 above), read as JSON whatever \
their Content-Type; unknown fields and values of the wrong type are refused (400). \
Every error is `{{"error": "one line"}}`: also 404 for an unknown path and 405, with an \
`Allow` header, for a method a path does not serve.

Live telemetry is not part of this document: WebSocket /ws/telemetry[/{{worker_id}}]{ws}. \
Neither are the Prometheus metrics: GET /metrics, in Prometheus' text format (with \
tokens, scope read)."""

SECURE_AUTH = """\
Every call but `GET /health` and `POST /api/join` needs an API token: \
`Authorization: Bearer <token>`. Reads (GET) take a token of scope `read` or `admin`, \
everything else `admin`. 401 without a token or with one the master does not accept \
(with `WWW-Authenticate: Bearer`), 403 for a `read` token on a call that needs `admin`, \
429 (with `Retry-After`) for an address that sent wrong tokens too often. The master's \
first admin token is in its data dir (`admin.token`); more with POST /api/tokens."""

INSECURE_AUTH = """\
This master runs without tokens (`--insecure`). Reads (GET) are open. Mutating calls \
(POST, DELETE) need `Authorization: Bearer <CLOUDAI_ADMIN_TOKEN>` when the master has \
a token (401 otherwise); without a token configured they are accepted from loopback \
only (403 otherwise)."""

SECURE_SCHEME = (
    "an API token (`cloudai.<id>.<secret>`): scope read for GETs, admin for the rest; the "
    "master's first admin token is in its data dir, admin.token"
)
INSECURE_SCHEME = (
    "the master's CLOUDAI_ADMIN_TOKEN; without one configured, mutating calls are "
    "accepted from loopback only"
)


@functools.cache
def openapi_document(
    secure: bool = False, tokens: bool = False, join: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a master that serves ``served_operations(...)``."""
    description = DESCRIPTION.format(
        auth=SECURE_AUTH if secure else INSECURE_AUTH,
        ws=" (a token of scope read: header, `token` query parameter or `cloudai_token` cookie)"
        if secure
        else "",
    )
    return build_document(
        served_operations(secure, tokens, join),
        "CloudAI master API",
        API_VERSION,
        description,
        SECURE_SCHEME if secure else INSECURE_SCHEME,
    )


@functools.cache
def openapi_json(secure: bool = False, tokens: bool = False, join: bool = False) -> bytes:
    return orjson.dumps(openapi_document(secure, tokens, join))


def add_routes(
    app: web.Application,
    admin: ClusterAdmin,
    admin_token: str | None,
    *,
    tokens: Tokens | None = None,
    join: Join | None = None,
    master_address: MasterAddress | None = None,
    cluster_ca: ClusterCa | None = None,
) -> None:
    """Serve the admin API on ``app`` (``/health`` is served by ``http_app``).

    ``admin_token``: the historic ``CLOUDAI_ADMIN_TOKEN`` (``--insecure`` only: with
    ``http_auth.install_auth``, tokens decide). ``tokens`` (the master's
    ``AccessControl``): serve the join-token and API-token endpoints. ``join``: serve
    ``POST /api/join``. ``master_address``: what the join command of a new join token
    gives ``--master`` (default: the host the API was reached by, port 50051)."""
    if (join is None) != (cluster_ca is None):
        raise ValueError("join and cluster_ca go together")
    app[API_KEY] = _Api(admin, admin_token or None, tokens, join, master_address, cluster_ca)
    app.middlewares.append(api_middleware)
    for op in served_operations(False, tokens is not None, join is not None):
        if op.handler is not None:
            app.router.add_route(op.method, op.path, op.handler)
