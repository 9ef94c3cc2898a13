"""Admin JSON API on the master's HTTP port (`/api/...`), with an OpenAPI document.

Mutating calls (POST/DELETE) need ``Authorization: Bearer <CLOUDAI_ADMIN_TOKEN>``; when
no token is configured they are accepted from loopback only. Errors are JSON
``{"error": "..."}`` with a fitting status code.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from cloudai.master.openapi import OPENAPI
from cloudai.master.registry import RegistryError
from cloudai.master.status import worker_view
from cloudai.master.tasks import TaskError, TaskSpec, TaskState

if TYPE_CHECKING:
    from cloudai.master.server import MasterServer

SERVER_KEY: web.AppKey[Any] = web.AppKey("master_server", object)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TASK_ERROR_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409, "unavailable": 503}


class ApiError(web.HTTPException):
    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=orjson.dumps({"error": message}).decode(), content_type="application/json"
        )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


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


@web.middleware
async def admin_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        server: MasterServer = request.app[SERVER_KEY]
        refusal = check_admin(
            request.method,
            request.remote,
            request.headers.get("Authorization"),
            server.settings.admin_token,
        )
        if refusal is not None:
            status = 401 if server.settings.admin_token else 403
            raise ApiError(status, refusal)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            raise ApiError(404, f"no such endpoint: {request.method} {request.path}") from None
        except web.HTTPMethodNotAllowed:
            raise ApiError(405, f"method not allowed: {request.method} {request.path}") from None
    return await handler(request)


def add_routes(server: MasterServer, app: web.Application) -> None:
    app[SERVER_KEY] = server
    app.middlewares.append(admin_guard)
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_get("/api/status", status)
    r.add_get("/api/workers", list_workers)
    r.add_post("/api/workers", register_worker)
    r.add_get("/api/workers/{worker_id}", get_worker)
    r.add_delete("/api/workers/{worker_id}", unregister_worker)
    r.add_get("/api/tasks", list_tasks)
    r.add_post("/api/tasks", submit_task)
    r.add_get("/api/tasks/{task_id}", get_task)
    r.add_post("/api/tasks/{task_id}/cancel", cancel_task)
    r.add_get("/api/tasks/{task_id}/logs", task_logs)


def _server(request: web.Request) -> MasterServer:
    return request.app[SERVER_KEY]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def task_json(task: TaskState, with_logs: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "worker_id": task.target_worker_id,
        "docker_image": task.docker_image,
        "command": task.command,
        "req_cpu": task.req_cpu,
        "req_memory": task.req_memory,
        "req_storage": task.req_storage,
        "req_gpu": task.req_gpu,
        "status": task.status,
        "message": task.message,
        "submitted_at": task.submitted_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "exit_code": task.exit_code,
        "result_location": task.result_location,
    }
    if with_logs:
        data["logs"] = task.logs
        data["logs_truncated"] = task.logs_truncated
    return data


# -- handlers -------------------------------------------------------------------------------


async def openapi(request: web.Request) -> web.Response:
    return json_response(OPENAPI)


async def status(request: web.Request) -> web.Response:
    return json_response(_server(request).summary())


async def list_workers(request: web.Request) -> web.Response:
    server = _server(request)
    telemetry = server.telemetry.get_all_worker_telemetry()
    return json_response(
        [worker_view(entry, telemetry.get(entry.worker_id)) for entry in server.registry]
    )


async def get_worker(request: web.Request) -> web.Response:
    server = _server(request)
    worker_id = request.match_info["worker_id"]
    entry = server.registry.get(worker_id)
    if entry is None:
        raise ApiError(404, f"unknown worker {worker_id!r}")
    return json_response(worker_view(entry, server.telemetry.get_worker_telemetry(worker_id)))


async def register_worker(request: web.Request) -> web.Response:
    body = await _body(request)
    worker_id, address = body.get("worker_id"), body.get("address", "")
    if not isinstance(worker_id, str) or not isinstance(address, str):
        raise ApiError(400, 'expected {"worker_id": "...", "address": "ip:port"}')
    try:
        entry = _server(request).authorise_worker(worker_id, address)
    except RegistryError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response(worker_view(entry, None), status=201)


async def unregister_worker(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    if not _server(request).revoke_worker(worker_id):
        raise ApiError(404, f"unknown worker {worker_id!r}")
    return web.Response(status=204)


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number")
    return float(value)


async def submit_task(request: web.Request) -> web.Response:
    body = await _body(request)
    strings = {}
    for name in ("worker_id", "docker_image", "command", "task_id"):
        value = body.get(name, "")
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string")
        strings[name] = value
    spec = TaskSpec(
        target_worker_id=strings["worker_id"],
        docker_image=strings["docker_image"],
        command=strings["command"],
        task_id=strings["task_id"],
        req_cpu=_number(body, "req_cpu"),
        req_memory=_number(body, "req_memory"),
        req_storage=_number(body, "req_storage"),
        req_gpu=_number(body, "req_gpu"),
    )
    try:
        task = await _server(request).tasks.submit(spec)
    except TaskError as exc:
        raise ApiError(_TASK_ERROR_STATUS[exc.kind], str(exc)) from None
    return json_response(task_json(task), status=201 if task.status != "rejected" else 422)


async def list_tasks(request: web.Request) -> web.Response:
    tasks = _server(request).tasks.list(
        status=request.query.get("status") or None,
        worker_id=request.query.get("worker_id") or None,
    )
    tasks.sort(key=lambda t: t.submitted_at)
    return json_response([task_json(task) for task in tasks])


def _task(request: web.Request) -> TaskState:
    try:
        return _server(request).tasks.get(request.match_info["task_id"])
    except TaskError as exc:
        raise ApiError(404, str(exc)) from None


async def get_task(request: web.Request) -> web.Response:
    return json_response(task_json(_task(request), with_logs=True))


async def cancel_task(request: web.Request) -> web.Response:
    try:
        task = await _server(request).tasks.cancel(request.match_info["task_id"])
    except TaskError as exc:
        raise ApiError(_TASK_ERROR_STATUS[exc.kind], str(exc)) from None
    return json_response(task_json(task), status=202)


async def task_logs(request: web.Request) -> web.Response:
    task = _task(request)
    return json_response(
        {
            "task_id": task.task_id,
            "status": task.status,
            "exit_code": task.exit_code,
            "logs": task.logs,
            "logs_truncated": task.logs_truncated,
            "time": time.time(),
        }
    )
