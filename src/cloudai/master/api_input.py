"""What the HTTP API reads from a request: a body or a query, checked against its model.

Every ``*_api`` module reads through here, so every endpoint refuses the same way: a
``Refusal`` (413 past ``MAX_BODY_BYTES``, 400 with one line naming the first problem),
which the admin API's middleware turns into ``{"error": ...}``."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from cloudai.api.errors import describe

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body any endpoint takes."""

M = TypeVar("M", bound=BaseModel)


class Refusal(Exception):
    """An answer other than success: the status code and one line of text."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def size_text(count: int) -> str:
    return f"{count // 1024**2} MiB" if count % 1024**2 == 0 else f"{count // 1024} KiB"


def too_large() -> str:
    return f"the body is larger than the limit of {size_text(MAX_BODY_BYTES)}"


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request body as ``model``: 413 past MAX_BODY_BYTES, 400 if it does not fit.

    The body is read as JSON whatever its Content-Type says (``curl -d`` sends
    ``application/x-www-form-urlencoded``)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refusal(413, too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, too_large())
        chunks.append(chunk)
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise Refusal(400, describe(exc, model)) from None


def read_query(request: web.Request, model: type[M], *, only_known: bool = False) -> M:
    """The query string as ``model`` (each parameter at most once); 400 naming the first
    problem. ``only_known``: a parameter the model does not have is refused too."""
    names: Collection[str] = [
        field.alias or name for name, field in model.model_fields.items()
    ]  # as the URL spells them ("from", not "from_")
    if only_known:
        for name in request.query:
            if name not in names:
                raise Refusal(400, f"unknown query parameter {name!r}: use {', '.join(names)}")
    values: dict[str, str] = {}
    for name in names:
        given = request.query.getall(name, [])
        if len(given) > 1:
            raise Refusal(400, f"{name} is given {len(given)} times; give it once")
        if given:
            values[name] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Refusal(400, describe(exc)) from None
