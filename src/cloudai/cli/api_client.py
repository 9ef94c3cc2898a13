"""A small synchronous client of the master's admin JSON API (``/api/...``).

Standard library only (urllib), so a one-shot ``cloudai`` command starts fast. Every
failure is an ``ApiError`` with one line of text: the API's ``{"error"}`` message, or
what went wrong reaching the master.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    """The master refused a call (``status`` is the HTTP status) or could not be reached
    (``status`` is None)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body

    @property
    def unreachable(self) -> bool:
        return self.status is None


def base_url(url: str | None = None) -> str:
    """``--url`` or ``$CLOUDAI_URL`` or the default, as an http(s) base without a slash."""
    text = (url or os.environ.get("CLOUDAI_URL") or DEFAULT_URL).strip().rstrip("/")
    if text.startswith("ws://"):
        text = "http://" + text[5:]
    elif text.startswith("wss://"):
        text = "https://" + text[6:]
    elif "://" not in text:
        text = "http://" + text
    return text


def _error_message(status: int, reason: str, body: Any) -> str:
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            return body["error"]
        if body.get("status") == "rejected" and body.get("task_id"):
            return f"task {body['task_id']} rejected: {body.get('message') or 'no reason given'}"
        if isinstance(body.get("message"), str) and body["message"]:
            return body["message"]
    return f"HTTP {status} {reason}".strip()


class ApiClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0):
        self.url = base_url(url)
        self.token = token
        self.timeout = timeout

    # -- transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str | None] | None = None,
    ) -> Any:
        url = self.url + path
        if query:
            params = {k: v for k, v in query.items() if v}
            if params:
                url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            parsed = _loads(raw)
            raise ApiError(_error_message(exc.code, exc.reason, parsed), exc.code, parsed) from None
        except urllib.error.URLError as exc:
            raise ApiError(self._unreachable(exc.reason)) from None
        except TimeoutError:
            raise ApiError(
                f"the master at {self.url} did not answer in {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise ApiError(self._unreachable(exc)) from None
        return _loads(raw) if raw else None

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

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/api/status")

    def workers(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/workers")

    def worker(self, worker_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/workers/{_quote(worker_id)}")

    def register(self, worker_id: str, address: str = "") -> dict[str, Any]:
        return self.request("POST", "/api/workers", {"worker_id": worker_id, "address": address})

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
    ) -> dict[str, Any]:
        return self.request(
            "POST",
            "/api/tasks",
            {
                "worker_id": worker_id,
                "docker_image": docker_image,
                "command": command,
                "req_cpu": req_cpu,
                "req_memory": req_memory,
                "req_storage": req_storage,
                "req_gpu": req_gpu,
                "task_id": task_id,
            },
        )

    def tasks(self, status: str | None = None, worker_id: str | None = None) -> list[dict]:
        return self.request("GET", "/api/tasks", query={"status": status, "worker_id": worker_id})

    def task(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/tasks/{_quote(task_id)}")

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{_quote(task_id)}/cancel")

    def logs(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/tasks/{_quote(task_id)}/logs")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
