"""OpenAPI 3.1 description of the master's HTTP API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Invalid input"),
    "401": _json(_ref("Error"), "Admin token missing or wrong"),
    "403": _json(_ref("Error"), "Mutating call from a non-loopback address without a token"),
    "404": _json(_ref("Error"), "Not found"),
}
_WORKER_ID = {"name": "worker_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NUMBER = {"type": "number", "minimum": 0}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "CloudAI master API",
        "version": "1",
        "description": "Admin API of a CloudAI master. Mutating calls need "
        "`Authorization: Bearer <CLOUDAI_ADMIN_TOKEN>`, or come from loopback when no "
        "token is configured. Live telemetry: WebSocket /ws/telemetry[/{worker_id}].",
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Health": {
                "type": "object",
                "required": ["status", "time", "active_clients", "workers", "active_workers"],
                "properties": {
                    "status": {"type": "string"},
                    "time": {"type": "integer"},
                    "active_clients": {"type": "integer"},
                    "workers": {"type": "integer"},
                    "active_workers": {"type": "integer"},
                },
            },
            "Worker": {
                "type": "object",
                "properties": {
                    "worker_id": {"type": "string"},
                    "address": {"type": "string"},
                    "registered": {"type": "boolean"},
                    "total_cpu": {"type": "number"},
                    "total_memory": {"type": "number"},
                    "total_storage": {"type": "number"},
                    "total_gpu": {"type": "number"},
                    "is_active": {"type": "boolean"},
                    "cpu_usage": {"type": "number"},
                    "memory_usage": {"type": "number"},
                    "storage_usage": {"type": "number"},
                    "gpu_usage": {"type": "number"},
                    "running_tasks": {"type": "array", "items": {"type": "object"}},
                    "last_update": {"type": ["number", "null"]},
                },
            },
            "WorkerRegistration": {
                "type": "object",
                "required": ["worker_id"],
                "properties": {
                    "worker_id": {"type": "string", "maxLength": 128},
                    "address": {"type": "string", "description": "ip:port of the worker"},
                },
            },
            "TaskSubmission": {
                "type": "object",
                "required": ["worker_id"],
                "properties": {
                    "worker_id": {"type": "string"},
                    "task_id": {"type": "string", "description": "generated when absent"},
                    "docker_image": {"type": "string"},
                    "command": {"type": "string"},
                    "req_cpu": _NUMBER,
                    "req_memory": _NUMBER,
                    "req_storage": _NUMBER,
                    "req_gpu": _NUMBER,
                },
            },
            "Task": {
                "type": "object",
                "properties": {
                    "task_id": {"type": "string"},
                    "worker_id": {"type": "string"},
                    "docker_image": {"type": "string"},
                    "command": {"type": "string"},
                    "req_cpu": {"type": "number"},
                    "req_memory": {"type": "number"},
                    "req_storage": {"type": "number"},
                    "req_gpu": {"type": "number"},
                    "status": {
                        "type": "string",
                        "enum": [
                            "queued",
                            "assigned",
                            "running",
                            "success",
                            "failure",
                            "cancelled",
                            "rejected",
                        ],
                    },
                    "message": {"type": "string"},
                    "submitted_at": {"type": "number"},
                    "started_at": {"type": ["number", "null"]},
                    "finished_at": {"type": ["number", "null"]},
                    "exit_code": {"type": ["integer", "null"]},
                    "result_location": {"type": "string"},
                    "logs": {"type": "string"},
                    "logs_truncated": {"type": "boolean"},
                },
            },
            "Status": {"type": "object"},
            "Logs": {
                "type": "object",
                "properties": {
                    "task_id": {"type": "string"},
                    "status": {"type": "string"},
                    "exit_code": {"type": ["integer", "null"]},
                    "logs": {"type": "string"},
                    "logs_truncated": {"type": "boolean"},
                },
            },
        },
    },
    "paths": {
        "/health": {"get": {"summary": "Health", "responses": {"200": _json(_ref("Health"))}}},
        "/api/status": {
            "get": {"summary": "Cluster summary", "responses": {"200": _json(_ref("Status"))}}
        },
        "/api/workers": {
            "get": {
                "summary": "List workers",
                "responses": {"200": _json({"type": "array", "items": _ref("Worker")})},
            },
            "post": {
                "summary": "Register (authorise) a worker; the master then calls its "
                "MasterRegister",
                "security": [{"adminToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WorkerRegistration")}},
                },
                "responses": {"201": _json(_ref("Worker"), "Registered"), **_ERRORS},
            },
        },
        "/api/workers/{worker_id}": {
            "parameters": [_WORKER_ID],
            "get": {
                "summary": "One worker",
                "responses": {"200": _json(_ref("Worker")), "404": _ERRORS["404"]},
            },
            "delete": {
                "summary": "Unregister a worker",
                "security": [{"adminToken": []}],
                "responses": {"204": {"description": "Unregistered"}, **_ERRORS},
            },
        },
        "/api/tasks": {
            "get": {
                "summary": "List tasks",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "worker_id", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json({"type": "array", "items": _ref("Task")})},
            },
            "post": {
                "summary": "Submit a task to a worker",
                "security": [{"adminToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TaskSubmission")}},
                },
                "responses": {
                    "201": _json(_ref("Task"), "Assigned"),
                    "409": _json(_ref("Error"), "Duplicate task id"),
                    "422": _json(_ref("Task"), "Refused by the worker"),
                    "503": _json(_ref("Error"), "Worker not reachable or not registered"),
                    **_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}": {
            "parameters": [_TASK_ID],
            "get": {
                "summary": "One task with its logs",
                "responses": {"200": _json(_ref("Task")), "404": _ERRORS["404"]},
            },
        },
        "/api/tasks/{task_id}/cancel": {
            "parameters": [_TASK_ID],
            "post": {
                "summary": "Cancel a running task",
                "security": [{"adminToken": []}],
                "responses": {
                    "202": _json(_ref("Task"), "Cancellation requested"),
                    "409": _json(_ref("Error"), "Already finished"),
                    **_ERRORS,
                },
            },
        },
        "/api/tasks/{task_id}/logs": {
            "parameters": [_TASK_ID],
            "get": {
                "summary": "A task's logs (stdout+stderr, last 1 MiB)",
                "responses": {"200": _json(_ref("Logs")), "404": _ERRORS["404"]},
            },
        },
    },
}
