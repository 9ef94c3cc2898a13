"""The OpenAPI 3.1 document of the master's HTTP API, generated, never written by hand.

``admin_api`` describes each operation once (method, path, parameters, request model,
every status code it can answer with its response model) as an ``Operation``; the same
list registers the routes and, through ``build_document``, produces the document served
at ``GET /api/openapi.json``. Schemas come from the pydantic models of
``cloudai.api.models`` (requests in validation mode, responses in serialization mode),
their definitions merged under ``components/schemas``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "adminToken"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One status code of an operation: its description and body type (None: no body)."""

    description: str
    body: Any = None  # a model class or a type such as list[Worker]
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description
    media_type: str | None = None  # a body that is not JSON (e.g. bytes), without a model


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    location: Literal["path", "query"]
    type: Any  # a type TypeAdapter understands: str, an Annotated id, an enum
    description: str = ""

    @property
    def required(self) -> bool:
        return self.location == "path"


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    replies: Mapping[int, Reply]
    handler: Handler | None = None  # None: served by another module, documented here
    body: type[BaseModel] | None = None
    params: Sequence[Param] = ()
    secured: bool = False  # needs a token (admin_api sets it for the rule in force)
    description: str = ""


def build_document(
    operations: Sequence[Operation],
    title: str,
    version: str,
    description: str,
    scheme_description: str = "a bearer token",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    keys: list[tuple[tuple[str, ...], JsonSchemaMode, TypeAdapter[Any]]] = []
    for op in operations:
        where = (op.method, op.path)
        if op.body is not None:
            keys.append(((*where, "body"), "validation", TypeAdapter(op.body)))
        for param in op.params:
            keys.append(((*where, "param", param.name), "validation", TypeAdapter(param.type)))
        for status, reply in op.replies.items():
            if reply.body is not None:
                adapter = TypeAdapter(reply.body)
                keys.append(((*where, "reply", str(status)), "serialization", adapter))
    schema_of, definitions = TypeAdapter.json_schemas(keys, ref_template=REF_TEMPLATE)

    def schema(*key: str, mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(schema_of[(key, mode)])

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        where = (op.method, op.path)
        entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
        if op.description:
            entry["description"] = op.description
        entry["security"] = [{SECURITY_SCHEME: []}] if op.secured else []
        if op.params:
            entry["parameters"] = [
                _parameter(param, schema(*where, "param", param.name, mode="validation"))
                for param in op.params
            ]
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": schema(*where, "body", mode="validation")}
                },
            }
        responses: dict[str, Any] = {}
        for status, reply in sorted(op.replies.items()):
            response: dict[str, Any] = {"description": reply.description}
            if reply.headers:
                response["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in reply.headers.items()
                }
            if reply.body is not None:
                body = schema(*where, "reply", str(status), mode="serialization")
                response["content"] = {"application/json": {"schema": body}}
            elif reply.media_type is not None:
                raw = {"type": "string", "contentMediaType": reply.media_type}
                response["content"] = {reply.media_type: {"schema": raw}}
            responses[str(status)] = response
        entry["responses"] = responses
        paths.setdefault(op.path, {})[op.method.lower()] = entry

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(definitions.get("$defs", {}).items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": scheme_description,
                }
            },
        },
    }


def _parameter(param: Param, schema: dict[str, Any]) -> dict[str, Any]:
    description = param.description or schema.pop("description", "")
    schema.pop("title", None)
    out: dict[str, Any] = {"name": param.name, "in": param.location, "required": param.required}
    if description:
        out["description"] = description
    out["schema"] = schema
    return out
