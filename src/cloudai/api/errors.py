"""One line of text for a refused request body or query: what the API answers in
``{"error": ...}``, and what a console or client can print."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def describe(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for the first problem pydantic found (and how many more there are)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    kind = first["type"]
    where = ".".join(str(part) for part in first["loc"])
    ctx = first.get("ctx") or {}
    if kind == "json_invalid":
        text = f"the body is not valid JSON: {ctx.get('error', first['msg'])}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        text = "the body must be a JSON object"
    elif kind == "extra_forbidden":
        known = ", ".join(model.model_fields) if model is not None else ""
        text = f"unknown field {where!r}" + (f" (known: {known})" if known else "")
    elif kind == "missing":
        text = f"{where} is required"
    elif kind == "value_error":
        text = str(ctx.get("error", first["msg"]))
    elif kind == "enum":
        text = f"{where} must be one of {ctx.get('expected', '')}, got {_shown(first['input'])}"
    else:
        message = first["msg"]
        text = f"{where}: {message[:1].lower()}{message[1:]}" if where else message
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
