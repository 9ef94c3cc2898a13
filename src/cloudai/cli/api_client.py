"""A small synchronous client of the master's admin JSON API (``/api/...``).

HTTP with the standard library (urllib), bodies with the API's own models
(``cloudai.api.models``): each method sends a request model and returns the response
model, so the client and the master share one contract. The master validates what it
is sent; the client does not second-guess it. Every failure is an ``ApiError`` with
one line of text: the API's ``{"error"}`` message, or what went wrong reaching the
master.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from cloudai.api.models import (
    ClusterSummary,
    Task,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerRegistration,
)
from cloudai.settings import DEFAULT_URL
from cloudai.task_status import TaskStatus

T = TypeVar("T")
_WORKERS: TypeAdapter[list[Worker]] = TypeAdapter(list[Worker])
_TASKS: TypeAdapter[list[Task]] = TypeAdapter(list[Task])


class ApiError(Exception):
    """The master refused a call (``status`` is the HTTP status) or could not be reached
    (``status`` is None). ``body`` is the parsed JSON of the answer, if any."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body

    @property
    def unreachable(self) -> bool:
        return self.status is None


def base_url(url: str | None = None) -> str:
    """A master's address (or the default) as an http(s) base without a slash. Where the
    address comes from (flag, ``CLOUDAI_URL``, config file) is ``ClientSettings``' job."""
    text = (url or DEFAULT_URL).strip().rstrip("/")
    if text.startswith("ws://"):
        text = "http://" + text[5:]
    elif text.startswith("wss://"):
        text = "https://" + text[6:]
    elif "://" not in text:
        text = "http://" + text
    return text


def _error_message(status: int, reason: str, body: Any) -> str:
    if isinstance(body, dict):
        error, message = body.get("error"), body.get("message")
        if isinstance(error, str):
            return error
        if body.get("status") == "rejected" and body.get("task_id"):
            return f"task {body['task_id']} rejected: {message or 'no reason given'}"
        if isinstance(message, str) and message:
            return message
    return f"HTTP {status} {reason}".strip()


class ApiClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> None:
        self.url = base_url(url)
        self.token = token
        self.timeout = timeout

    # -- transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        query: dict[str, str | None] | None = None,
    ) -> bytes:
        """One call; the answer's raw body (empty for 204). ApiError when refused."""
        url = self.url + path
        if query:
            params = {k: v for k, v in query.items() if v}
            if params:
                url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = body.model_dump_json().encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw: bytes = response.read()
                return raw
        except urllib.error.HTTPError as exc:
            parsed = _loads(exc.read())
            raise ApiError(_error_message(exc.code, exc.reason, parsed), exc.code, parsed) from None
        except urllib.error.URLError as exc:
            raise ApiError(self._unreachable(exc.reason)) from None
        except TimeoutError:
            raise ApiError(
                f"the master at {self.url} did not answer in {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise ApiError(self._unreachable(exc)) from None

    def call(
        self,
        adapter: TypeAdapter[T],
        method: str,
        path: str,
        body: BaseModel | None = None,
        query: dict[str, str | None] | None = None,
    ) -> T:
        """One call whose answer is read as ``adapter``'s type."""
        raw = self.request(method, path, body, query)
        try:
            return adapter.validate_json(raw)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"]) or "the body"
            raise ApiError(
                f"unexpected answer from the master at {self.url} to {method} {path}: "
                f"{where}: {problem['msg']}",
                200,
                _loads(raw),
            ) from None

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = f"no answer in {self.timeout:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        else:
            why = str(reason) or type(reason).__name__
        return f"cannot reach the master at {self.url}: {why} (is it running? see --url)"

    # -- endpoints --------------------------------------------------------------------------

    def status(self) -> ClusterSummary:
        return self.call(_SUMMARY, "GET", "/api/status")

    def workers(self) -> list[Worker]:
        return self.call(_WORKERS, "GET", "/api/workers")

    def worker(self, worker_id: str) -> Worker:
        return self.call(_WORKER, "GET", f"/api/workers/{_quote(worker_id)}")

    def register(self, worker_id: str, address: str = "") -> Worker:
        body = WorkerRegistration.model_construct(worker_id=worker_id, address=address)
        return self.call(_WORKER, "POST", "/api/workers", body)

    def unregister(self, worker_id: str) -> None:
        self.request("DELETE", f"/api/workers/{_quote(worker_id)}")

    def submit(
        self,
        worker_id: str,
        docker_image: str = "",
        command: str = "",
        req_cpu: float = 0.0,
        req_memory: float = 0.0,
        req_storage: float = 0.0,
        req_gpu: float = 0.0,
        task_id: str = "",
    ) -> Task:
        """Submit a task. A task the worker refused is an ApiError (status 422) whose
        ``body`` is the task, status ``rejected``."""
        body = TaskSubmission.model_construct(
            worker_id=worker_id,
            task_id=task_id,
            docker_image=docker_image,
            command=command,
            req_cpu=req_cpu,
            req_memory=req_memory,
            req_storage=req_storage,
            req_gpu=req_gpu,
        )
        return self.call(_TASK, "POST", "/api/tasks", body)

    def tasks(
        self, status: TaskStatus | str | None = None, worker_id: str | None = None
    ) -> list[Task]:
        query = {"status": str(status) if status else None, "worker_id": worker_id}
        return self.call(_TASKS, "GET", "/api/tasks", query=query)

    def task(self, task_id: str) -> TaskWithLogs:
        return self.call(_TASK_WITH_LOGS, "GET", f"/api/tasks/{_quote(task_id)}")

    def cancel(self, task_id: str) -> Task:
        return self.call(_TASK, "POST", f"/api/tasks/{_quote(task_id)}/cancel")

    def logs(self, task_id: str) -> TaskLogs:
        return self.call(_TASK_LOGS, "GET", f"/api/tasks/{_quote(task_id)}/logs")


_SUMMARY: TypeAdapter[ClusterSummary] = TypeAdapter(ClusterSummary)
_WORKER: TypeAdapter[Worker] = TypeAdapter(Worker)
_TASK: TypeAdapter[Task] = TypeAdapter(Task)
_TASK_WITH_LOGS: TypeAdapter[TaskWithLogs] = TypeAdapter(TaskWithLogs)
_TASK_LOGS: TypeAdapter[TaskLogs] = TypeAdapter(TaskLogs)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
