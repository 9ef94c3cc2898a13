"""A small synchronous client of the master's admin JSON API (``/api/...``).

HTTPS (or plain HTTP for a master run with ``--insecure``) with the standard library
(urllib): the master's certificate is checked against the cluster CA (``ca_file``, the
master's ``tls/ca.pem``) or, without one, the system's trusted CAs, and its host name
as usual. Bodies with the API's own models
(``cloudai.api.models``): each method sends a request model and returns the response
model, so the client and the master share one contract. The master validates what it
is sent; the client does not second-guess it. Every failure is an ``ApiError`` with
one line of text: the API's ``{"error"}`` message, or what went wrong reaching the
master.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from cloudai.api.models import (
    Alert,
    AlertEvent,
    AlertRule,
    AlertRuleSpec,
    ApiTokenInfo,
    ApiTokenRequest,
    ClusterHistory,
    ClusterSummary,
    CreatedApiToken,
    CreatedJoinToken,
    JoinRequest,
    JoinResponse,
    JoinTokenInfo,
    JoinTokenRequest,
    SilenceInfo,
    SilenceRequest,
    Task,
    TaskLogs,
    TaskSubmission,
    TaskWithLogs,
    Worker,
    WorkerHistory,
    WorkerRegistration,
)
from cloudai.security.tokens import Scope
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
    """A master's address (or the default) as an http(s) base without a slash; without a
    scheme, https. Where the address comes from (flag, ``CLOUDAI_URL``, config file) is
    ``ClientSettings``' job."""
    text = (url or DEFAULT_URL).strip().rstrip("/")
    if text.startswith("ws://"):
        text = "http://" + text[5:]
    elif text.startswith("wss://"):
        text = "https://" + text[6:]
    elif "://" not in text:
        text = "https://" + text
    return text


def client_ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The client side of HTTPS and WSS: TLS 1.2 or later, the server's certificate
    checked against ``ca_file`` (else the system's trusted CAs) and its host name.
    ApiError when ``ca_file`` cannot be read or holds no certificate."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except FileNotFoundError:
        raise ApiError(f"the CA file {ca_file} does not exist (see --ca)") from None
    except ssl.SSLError as exc:  # (an OSError too)
        why = exc.reason or exc
        raise ApiError(f"the CA file {ca_file} holds no usable certificate: {why}") from None
    except OSError as exc:
        raise ApiError(f"cannot read the CA file {ca_file}: {exc.strerror or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def auth_headers(token: str | None) -> dict[str, str]:
    """``Authorization: Bearer <token>``, or nothing without a token."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _tls_problem(url: str, reason: object) -> str | None:
    """What to tell about a TLS failure reaching ``url`` (None: not a TLS failure)."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        why = reason.verify_message or str(reason)
        return (
            f"the certificate of the master at {url} is not trusted: {why} (give --ca FILE, "
            "the master's tls/ca.pem, or run 'cloudai login')"
        )
    if isinstance(reason, ssl.SSLError):
        why = reason.reason or str(reason)
        return (
            f"no TLS connection to the master at {url}: {why} (a master run with --insecure "
            "serves plain HTTP: use an http:// URL)"
        )
    return None


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


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """An answer of ``GET /api/tasks/{task_id}/output``: bytes and where they stand."""

    data: bytes
    size: int  # bytes of the run's output the master holds
    complete: bool  # nothing more will come
    next_offset: int
    attempt: int
    truncated: bool  # the master kept only the first part of the run's output


class ApiClient:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        ca_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ca_file``: the CA the master's certificate is checked against (default: the
        system's); ``ssl_context`` replaces that check altogether."""
        self.url = base_url(url)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._ssl_context = ssl_context

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings of an https URL (made once); None for plain HTTP."""
        if not self.url.startswith("https://"):
            return None
        if self._ssl_context is None:
            self._ssl_context = client_ssl_context(self.ca_file)
        return self._ssl_context

    # -- transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        query: dict[str, str | None] | None = None,
    ) -> bytes:
        """One call; the answer's raw body (empty for 204). ApiError when refused."""
        return self.exchange(method, path, body, query)[0]

    def exchange(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        query: dict[str, str | None] | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, Message]:
        """One call; the answer's raw body and its headers. ApiError when refused."""
        url = self.url + path
        if query:
            params = {k: v for k, v in query.items() if v}
            if params:
                url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            # Only what was given: a field this client knows and an older master does not
            # is sent only when it is used.
            data = body.model_dump_json(exclude_unset=True).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        context = self.ssl_context
        try:
            wait = timeout or self.timeout
            with urllib.request.urlopen(request, timeout=wait, context=context) as answer:
                raw: bytes = answer.read()
                return raw, answer.headers
        except urllib.error.HTTPError as exc:
            parsed = _loads(exc.read())
            raise ApiError(_error_message(exc.code, exc.reason, parsed), exc.code, parsed) from None
        except urllib.error.URLError as exc:
            raise ApiError(self._unreachable(exc.reason)) from None
        except TimeoutError:
            raise ApiError(
                f"the master at {self.url} did not answer in {self.timeout:g} s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
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
        tls = _tls_problem(self.url, reason)
        if tls is not None:
            return tls
        if self.url.startswith("http://") and isinstance(
            reason, ConnectionResetError | http.client.HTTPException
        ):
            return (
                f"the master at {self.url} closed the connection without an HTTP answer "
                "(does it serve HTTPS? then use an https:// URL)"
            )
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
        worker_id: str | None,
        docker_image: str = "",
        command: str = "",
        req_cpu: float = 0.0,
        req_memory: float = 0.0,
        req_storage: float = 0.0,
        req_gpu: float = 0.0,
        task_id: str = "",
        any_worker: bool = False,
        time_limit: float = 0.0,
        retries: int = 0,
    ) -> Task:
        """Submit a task (``worker_id`` None with ``any_worker``: the master places it). A
        task the worker refused is an ApiError (status 422) whose ``body`` is the task,
        status ``rejected``."""
        # Only what is set is sent: a master from before these fields accepts the rest.
        optional: dict[str, Any] = {"any_worker": True} if any_worker else {}
        if time_limit:
            optional["time_limit"] = time_limit
        if retries:
            optional["retries"] = retries
        body = TaskSubmission.model_construct(
            **optional,
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
        self,
        status: TaskStatus | str | None = None,
        worker_id: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks, oldest first (``limit``: only the newest that many; a master from
        before it was offered ignores it and answers every task)."""
        query = {
            "status": str(status) if status else None,
            "worker_id": worker_id,
            "limit": str(limit) if limit is not None else None,
        }
        return self.call(_TASKS, "GET", "/api/tasks", query=query)

    def task(self, task_id: str) -> TaskWithLogs:
        return self.call(_TASK_WITH_LOGS, "GET", f"/api/tasks/{_quote(task_id)}")

    def cancel(self, task_id: str) -> Task:
        return self.call(_TASK, "POST", f"/api/tasks/{_quote(task_id)}/cancel")

    def logs(self, task_id: str) -> TaskLogs:
        return self.call(_TASK_LOGS, "GET", f"/api/tasks/{_quote(task_id)}/logs")

    def output(
        self,
        task_id: str,
        offset: int = 0,
        limit: int | None = None,
        attempt: int | None = None,
        wait: float = 0.0,
    ) -> OutputChunk:
        """A range of a task run's output (``wait``: long-poll up to that many seconds)."""
        query = {
            "offset": str(offset) if offset else None,
            "limit": None if limit is None else str(limit),
            "attempt": None if attempt is None else str(attempt),
            "wait": f"{wait:g}" if wait else None,
        }
        path = f"/api/tasks/{_quote(task_id)}/output"
        data, headers = self.exchange("GET", path, query=query, timeout=self.timeout + wait)
        try:
            return OutputChunk(
                data=data,
                size=int(headers["X-Output-Size"]),
                complete=headers["X-Output-Complete"] == "true",
                next_offset=int(headers["X-Next-Offset"]),
                attempt=int(headers["X-Output-Attempt"]),
                truncated=headers.get("X-Output-Truncated") == "true",
            )
        except (KeyError, TypeError, ValueError):
            raise ApiError(
                f"unexpected answer from the master at {self.url} to GET {path}: "
                "the X-Output-* headers are missing or invalid",
                200,
            ) from None

    # tokens

    def create_join_token(
        self,
        ttl: float | None = None,
        uses: int | None = None,
        worker_id: str | None = None,
        description: str = "",
    ) -> CreatedJoinToken:
        """A new join token: ``ttl`` seconds (None: until revoked), ``uses`` joins (None:
        any number), for ``worker_id`` only (None: any)."""
        body = JoinTokenRequest.model_construct(
            ttl_seconds=ttl, uses=uses, worker_id=worker_id, description=description
        )
        return self.call(_CREATED_JOIN, "POST", "/api/join-tokens", body)

    def join_tokens(self) -> list[JoinTokenInfo]:
        return self.call(_JOIN_TOKENS, "GET", "/api/join-tokens")

    def revoke_join_token(self, token_id: str) -> JoinTokenInfo:
        return self.call(_JOIN_TOKEN, "DELETE", f"/api/join-tokens/{_quote(token_id)}")

    def create_api_token(
        self, scope: Scope, name: str = "", ttl: float | None = None
    ) -> CreatedApiToken:
        body = ApiTokenRequest.model_construct(scope=scope, name=name, ttl_seconds=ttl)
        return self.call(_CREATED_API, "POST", "/api/tokens", body)

    def api_tokens(self) -> list[ApiTokenInfo]:
        return self.call(_API_TOKENS, "GET", "/api/tokens")

    def revoke_api_token(self, token_id: str) -> ApiTokenInfo:
        return self.call(_API_TOKEN, "DELETE", f"/api/tokens/{_quote(token_id)}")

    def join(self, request: JoinRequest) -> JoinResponse:
        """Join the cluster (no API token needed: the join token is the credential)."""
        return self.call(_JOIN_RESPONSE, "POST", "/api/join", request)

    # alerts

    def alerts(self, state: str | None = None) -> list[Alert]:
        return self.call(_ALERTS, "GET", "/api/alerts", query={"state": state})

    def alert_history(
        self, rule: str | None = None, worker_id: str | None = None, limit: int | None = None
    ) -> list[AlertEvent]:
        query = {"rule": rule, "worker_id": worker_id, "limit": str(limit) if limit else None}
        return self.call(_ALERT_EVENTS, "GET", "/api/alerts/history", query=query)

    def alert_rules(self) -> list[AlertRule]:
        return self.call(_ALERT_RULES, "GET", "/api/alert-rules")

    def add_alert_rule(self, spec: AlertRuleSpec) -> AlertRule:
        return self.call(_ALERT_RULE, "POST", "/api/alert-rules", spec)

    def delete_alert_rule(self, name: str) -> AlertRule:
        return self.call(_ALERT_RULE, "DELETE", f"/api/alert-rules/{_quote(name)}")

    def silences(self) -> list[SilenceInfo]:
        return self.call(_SILENCES, "GET", "/api/silences")

    def add_silence(self, request: SilenceRequest) -> SilenceInfo:
        return self.call(_SILENCE, "POST", "/api/silences", request)

    def delete_silence(self, silence_id: str) -> SilenceInfo:
        return self.call(_SILENCE, "DELETE", f"/api/silences/{_quote(silence_id)}")

    # telemetry history

    def history(
        self,
        worker_id: str | None,
        metrics: str | None = None,
        start: float | None = None,
        end: float | None = None,
        points: int | None = None,
    ) -> dict[str, Any]:
        """A worker's history (None: the cluster's), as the API's JSON object; checked
        against its model."""
        query = {
            "metrics": metrics,
            "from": None if start is None else repr(start),
            "to": None if end is None else repr(end),
            "points": None if points is None else str(points),
        }
        path = "/api/history" if worker_id is None else f"/api/workers/{_quote(worker_id)}/history"
        model: type[BaseModel] = ClusterHistory if worker_id is None else WorkerHistory
        raw = self.request("GET", path, query=query)
        try:
            model.model_validate_json(raw)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"]) or "the body"
            raise ApiError(
                f"unexpected answer from the master at {self.url} to GET {path}: "
                f"{where}: {problem['msg']}",
                200,
                _loads(raw),
            ) from None
        body: dict[str, Any] = orjson.loads(raw)
        return body


_SUMMARY: TypeAdapter[ClusterSummary] = TypeAdapter(ClusterSummary)
_WORKER: TypeAdapter[Worker] = TypeAdapter(Worker)
_TASK: TypeAdapter[Task] = TypeAdapter(Task)
_TASK_WITH_LOGS: TypeAdapter[TaskWithLogs] = TypeAdapter(TaskWithLogs)
_TASK_LOGS: TypeAdapter[TaskLogs] = TypeAdapter(TaskLogs)
_CREATED_JOIN: TypeAdapter[CreatedJoinToken] = TypeAdapter(CreatedJoinToken)
_JOIN_TOKEN: TypeAdapter[JoinTokenInfo] = TypeAdapter(JoinTokenInfo)
_JOIN_TOKENS: TypeAdapter[list[JoinTokenInfo]] = TypeAdapter(list[JoinTokenInfo])
_CREATED_API: TypeAdapter[CreatedApiToken] = TypeAdapter(CreatedApiToken)
_API_TOKEN: TypeAdapter[ApiTokenInfo] = TypeAdapter(ApiTokenInfo)
_API_TOKENS: TypeAdapter[list[ApiTokenInfo]] = TypeAdapter(list[ApiTokenInfo])
_JOIN_RESPONSE: TypeAdapter[JoinResponse] = TypeAdapter(JoinResponse)
_ALERTS: TypeAdapter[list[Alert]] = TypeAdapter(list[Alert])
_ALERT_EVENTS: TypeAdapter[list[AlertEvent]] = TypeAdapter(list[AlertEvent])
_ALERT_RULE: TypeAdapter[AlertRule] = TypeAdapter(AlertRule)
_ALERT_RULES: TypeAdapter[list[AlertRule]] = TypeAdapter(list[AlertRule])
_SILENCE: TypeAdapter[SilenceInfo] = TypeAdapter(SilenceInfo)
_SILENCES: TypeAdapter[list[SilenceInfo]] = TypeAdapter(list[SilenceInfo])


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
