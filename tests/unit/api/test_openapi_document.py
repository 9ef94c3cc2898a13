"""The generated OpenAPI document: valid OpenAPI 3.1, and it covers every route."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from cloudai.master import admin_api
from cloudai.master.admin_api import OPERATIONS, add_routes, openapi_document, openapi_json
from cloudai.master.cluster_admin import ClusterAdmin
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.ws_hub import TelemetryHub
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryManager

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def test_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any error
    assert orjson.loads(openapi_json()) == doc


def _app() -> web.Application:
    """The master's HTTP app as the server builds it (no socket is opened)."""
    app = create_app(TelemetryManager(), TelemetryHub(), WebSocketConfig())
    add_routes(app, cast(ClusterAdmin, object()), "token")
    return app


def test_every_route_is_documented_and_every_operation_served(doc: dict[str, Any]) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in _app().router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp's automatic HEAD of /health's GET
        and not route.resource.canonical.startswith("/ws/")  # WebSocket: not OpenAPI
    }
    assert served == set(_operations(doc))


def test_every_operation_documents_its_answers(doc: dict[str, Any]) -> None:
    ops = _operations(doc)
    for (method, path), op in ops.items():
        codes = set(op["responses"])
        assert any(code.startswith("2") for code in codes), (method, path)
        secured = method in admin_api.MUTATING
        assert (op["security"] == [{"adminToken": []}]) is secured, (method, path)
        if secured:
            assert {"401", "403"} <= codes, (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        if "requestBody" in op:
            assert {"400", "413"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                model = "Task" if code == "422" else "ErrorBody"  # a rejected task: the task
                assert schema == {"$ref": f"#/components/schemas/{model}"}, (method, path)
    assert set(ops["POST", "/api/tasks"]["responses"]) == {
        "201", "400", "401", "403", "404", "409", "413", "422", "503",
    }  # fmt: skip
    assert set(ops["POST", "/api/tasks/{task_id}/cancel"]["responses"]) == {
        "202", "401", "403", "404", "409", "503",
    }  # fmt: skip
    assert set(ops["DELETE", "/api/workers/{worker_id}"]["responses"]) == {
        "204", "401", "403", "404",
    }  # fmt: skip


def test_parameters_and_schemas(doc: dict[str, Any]) -> None:
    ops = _operations(doc)
    params = {p["name"]: p for p in ops["GET", "/api/tasks"]["parameters"]}
    assert params["status"]["in"] == "query" and not params["status"]["required"]
    status_ref = params["status"]["schema"]["$ref"].rsplit("/", 1)[1]
    schemas = doc["components"]["schemas"]
    assert schemas[status_ref]["enum"] == [s.value for s in TaskStatus]
    assert params["worker_id"]["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    (task_id,) = ops["GET", "/api/tasks/{task_id}/logs"]["parameters"]
    assert task_id["in"] == "path" and task_id["required"]
    assert "time" in schemas["TaskLogs"]["required"]
    assert "fanout_tick_ms" in schemas["ClusterSummary"]["properties"]
    assert schemas["WorkerRegistration"]["additionalProperties"] is False
    assert schemas["TaskSubmission"]["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    # Every $ref points at a schema that exists.
    refs = {ref.rsplit("/", 1)[1] for ref in _refs(doc) if ref.startswith("#/components/schemas/")}
    assert refs <= set(schemas)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_operations_are_unique() -> None:
    keys = [(op.method, op.path) for op in OPERATIONS]
    assert len(keys) == len(set(keys))
    ids = [op.operation_id for op in OPERATIONS]
    assert len(ids) == len(set(ids))
