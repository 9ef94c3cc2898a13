"""The generated OpenAPI document: valid OpenAPI 3.1, and it covers every route, in each
mode: tokens (the default, ``http_auth.install_auth``) or ``--insecure`` (the historic
rule), with or without the token and join endpoints."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from cloudai.api.models import ClusterCa
from cloudai.master import admin_api
from cloudai.master.admin_api import (
    OPERATIONS,
    Join,
    Tokens,
    add_routes,
    openapi_document,
    openapi_json,
)
from cloudai.master.cluster_admin import ClusterAdmin
from cloudai.master.http_app import WebSocketConfig, create_app
from cloudai.master.http_auth import install_auth, required_scope
from cloudai.master.ws_hub import TelemetryHub
from cloudai.security.tokens import Scope
from cloudai.task_status import TaskStatus
from cloudai.telemetry.manager import TelemetryManager

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


MODES = [
    pytest.param((False, False, False), id="insecure"),
    pytest.param((False, True, True), id="insecure+tokens"),
    pytest.param((True, True, True), id="secure"),
    pytest.param((True, False, False), id="secure-core"),
]


@pytest.fixture(scope="module", params=[m.values[0] for m in MODES], ids=[m.id for m in MODES])
def mode(request: pytest.FixtureRequest) -> tuple[bool, bool, bool]:
    return cast(tuple[bool, bool, bool], request.param)


@pytest.fixture(scope="module")
def doc(mode: tuple[bool, bool, bool]) -> dict[str, Any]:
    return openapi_document(*mode)


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def test_valid_openapi_3_1(doc: dict[str, Any], mode: tuple[bool, bool, bool]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any error
    assert orjson.loads(openapi_json(*mode)) == doc


def _app(mode: tuple[bool, bool, bool]) -> web.Application:
    """The master's HTTP app as the server builds it (no socket is opened)."""
    secure, tokens, join = mode
    app = create_app(TelemetryManager(), TelemetryHub(), WebSocketConfig())
    add_routes(
        app,
        cast(ClusterAdmin, object()),
        None if secure else "token",
        tokens=cast(Tokens, object()) if tokens else None,
        join=cast(Join, object()) if join else None,
        cluster_ca=ClusterCa(ca_pem="-", fingerprint="0" * 64) if join else None,
    )
    if secure:
        install_auth(app, lambda text: None)
    return app


def test_every_route_is_documented_and_every_operation_served(
    doc: dict[str, Any], mode: tuple[bool, bool, bool]
) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in _app(mode).router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp's automatic HEAD of /health's GET
        and not route.resource.canonical.startswith("/ws/")  # WebSocket: not OpenAPI
    }
    assert served == set(_operations(doc))


def test_every_operation_documents_its_answers(
    doc: dict[str, Any], mode: tuple[bool, bool, bool]
) -> None:
    secure = mode[0]
    ops = _operations(doc)
    for (method, path), op in ops.items():
        codes = set(op["responses"])
        assert any(code.startswith("2") for code in codes), (method, path)
        needed = required_scope(method, path)
        if secure:
            secured = needed is not None
            auth_codes = {"401", "429"} | ({"403"} if needed is Scope.ADMIN else set())
        else:
            secured = method in admin_api.MUTATING and needed is not None
            auth_codes = {"401", "403"}
        assert (op["security"] == [{"adminToken": []}]) is secured, (method, path)
        if secured:
            assert auth_codes <= codes, (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
            if secure:
                assert "Retry-After" in op["responses"]["429"]["headers"]
        elif (method, path) != ("POST", "/api/join"):  # its 403: a refused join token
            assert not {"401", "403", "429"} & codes, (method, path)
        if "requestBody" in op:
            assert {"400", "413"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                # a task the worker rejected comes back as the task; every other error is one
                rejected_task = code == "422" and path == "/api/tasks"
                model = "Task" if rejected_task else "ErrorBody"
                assert schema == {"$ref": f"#/components/schemas/{model}"}, (method, path)
    limited = {"429"} if secure else set()
    assert set(ops["POST", "/api/tasks"]["responses"]) == {
        "201", "400", "401", "403", "404", "409", "413", "422", "503",
    } | limited  # fmt: skip
    assert set(ops["POST", "/api/tasks/{task_id}/cancel"]["responses"]) == {
        "202", "401", "403", "404", "409", "503",
    } | limited  # fmt: skip
    assert set(ops["DELETE", "/api/workers/{worker_id}"]["responses"]) == {
        "204", "401", "403", "404", "503",
    } | limited  # fmt: skip
    reads = {"401", "429"} if secure else set()
    assert set(ops["GET", "/api/workers"]["responses"]) == {"200"} | reads
    assert set(ops["GET", "/health"]["responses"]) == {"200"}
    if mode[1]:
        assert set(ops["POST", "/api/join-tokens"]["responses"]) == {
            "201", "400", "401", "403", "409", "413",
        } | limited  # fmt: skip
        assert set(ops["DELETE", "/api/tokens/{token_id}"]["responses"]) == {
            "200", "400", "401", "403", "404",
        } | limited  # fmt: skip
    if mode[2]:
        assert set(ops["POST", "/api/join"]["responses"]) == {
            "200", "400", "403", "409", "413", "422", "503",
        }  # fmt: skip
        assert ops["POST", "/api/join"]["security"] == []


def test_the_description_says_which_rule_is_in_force() -> None:
    secure = openapi_document(True, True, True)
    insecure = openapi_document()
    assert "needs an API token" in secure["info"]["description"]
    assert "--insecure" in insecure["info"]["description"]
    schemes = [d["components"]["securitySchemes"]["adminToken"] for d in (secure, insecure)]
    assert all(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes)
    assert "admin.token" in schemes[0]["description"]
    assert "CLOUDAI_ADMIN_TOKEN" in schemes[1]["description"]


def test_parameters_and_schemas(doc: dict[str, Any], mode: tuple[bool, bool, bool]) -> None:
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
    if mode[1]:
        (token_id,) = ops["DELETE", "/api/join-tokens/{token_id}"]["parameters"]
        assert token_id["schema"]["pattern"] == "^[0-9a-f]{12}$"
        assert schemas["JoinTokenRequest"]["additionalProperties"] is False
        scope = schemas["ApiTokenRequest"]["properties"]["scope"]["$ref"].rsplit("/", 1)[1]
        assert set(schemas[scope]["enum"]) == {"read", "admin"}
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
