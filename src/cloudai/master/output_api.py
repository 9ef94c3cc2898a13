"""``GET /api/tasks/{task_id}/output``: a range of a task run's output, as bytes.

The answer is the bytes themselves (``application/octet-stream``, binary-safe), with
headers that say where they stand:

- ``X-Output-Size``: bytes of the run's output the master holds;
- ``X-Output-Complete``: ``true`` once nothing more will come (the run's last chunk
  arrived, or the run ended), else ``false``;
- ``X-Next-Offset``: the offset to ask for next (``offset`` + the bytes answered);
- ``X-Output-Attempt``: the run answered (the task's current or last one by default);
- ``X-Output-Truncated``: ``true`` when the run wrote more than the master keeps (it
  keeps the first ``--task-output-max-mib``; the last part is in the task's logs).

``wait=S`` (at most 30) long-polls: the answer comes when there are bytes past
``offset`` or the run has ended, or after S seconds (then with no bytes). A ``read``
token suffices. Refusals are ``AdminError``s, which ``admin_api``'s middleware turns
into ``{"error"}`` answers.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from cloudai.api.models import ErrorBody, Identifier
from cloudai.master.api_input import read_query
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.master.openapi import Operation, Param, Reply
from cloudai.master.output_service import MAX_WAIT_SECONDS, OutputRange, TaskOutputs
from cloudai.master.task_output import MAX_READ_BYTES, MIB, OutputDeleted, OutputUnavailable
from cloudai.master.tasks import TaskError

OUTPUT_KEY = web.AppKey("task_outputs", TaskOutputs)
DEFAULT_LIMIT = MIB


class OutputQuery(BaseModel):
    """The query of ``GET /api/tasks/{task_id}/output``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    offset: int = Field(default=0, ge=0, le=2**62, description="the first byte wanted (0)")
    limit: int = Field(
        default=DEFAULT_LIMIT,
        ge=0,
        le=MAX_READ_BYTES,
        description=f"at most this many bytes ({DEFAULT_LIMIT}; at most {MAX_READ_BYTES})",
    )
    attempt: int | None = Field(
        default=None, ge=1, le=1_000_000, description="which run (default: the current or last)"
    )
    wait: float = Field(
        default=0.0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="seconds to wait for bytes past offset or the run's end (0)",
    )


def output_headers(answer: OutputRange) -> dict[str, str]:
    return {
        "X-Output-Size": str(answer.size),
        "X-Output-Complete": "true" if answer.complete else "false",
        "X-Next-Offset": str(answer.next_offset),
        "X-Output-Attempt": str(answer.attempt),
        "X-Output-Truncated": "true" if answer.truncated else "false",
        "Cache-Control": "no-store",
    }


async def task_output(request: web.Request) -> web.Response:
    outputs = request.app.get(OUTPUT_KEY)
    if outputs is None:
        raise AdminError(ErrorKind.UNAVAILABLE, "this master keeps no task output")
    query = read_query(request, OutputQuery)
    try:
        answer = await outputs.read(
            request.match_info["task_id"], query.offset, query.limit, query.attempt, query.wait
        )
    except TaskError as exc:
        raise AdminError(ErrorKind.NOT_FOUND, str(exc)) from None
    except OutputUnavailable as exc:
        raise AdminError(ErrorKind.UNAVAILABLE, str(exc)) from None
    except OutputDeleted as exc:
        raise AdminError(ErrorKind.GONE, str(exc)) from None
    return web.Response(
        body=answer.data, content_type="application/octet-stream", headers=output_headers(answer)
    )


_HEADERS = {
    "X-Output-Size": "bytes of the run's output the master holds",
    "X-Output-Complete": "true once nothing more will come (the run ended), else false",
    "X-Next-Offset": "the offset to ask for next: offset + the bytes in this answer",
    "X-Output-Attempt": "the run these bytes are of",
    "X-Output-Truncated": "true when the run wrote more than the master keeps (the first "
    "part is kept; the task's logs hold the last part)",
}

OUTPUT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/tasks/{task_id}/output",
        "taskOutput",
        "A range of a task run's output, as bytes, optionally waiting for more",
        {
            200: Reply(
                "The bytes from offset (none past what is held), as the task wrote them",
                headers=_HEADERS,
                media_type="application/octet-stream",
            ),
            400: Reply("Invalid input: a query value that does not fit", ErrorBody),
            404: Reply("No such task, or no such attempt of it", ErrorBody),
            410: Reply(
                "The output was deleted: the task finished longer ago than the master's "
                "task_output_retention (its logs keep the last part)",
                ErrorBody,
            ),
            503: Reply("The master keeps no task output, or cannot read it now", ErrorBody),
        },
        handler=task_output,
        params=(
            Param("task_id", "path", Identifier, "the task's id"),
            Param("offset", "query", Annotated[int, Field(ge=0, le=2**62)], "the first byte (0)"),
            Param(
                "limit",
                "query",
                Annotated[int, Field(ge=0, le=MAX_READ_BYTES)],
                f"at most this many bytes ({DEFAULT_LIMIT})",
            ),
            Param(
                "attempt",
                "query",
                Annotated[int, Field(ge=1, le=1_000_000)],
                "which run of the task (default: its current or last)",
            ),
            Param(
                "wait",
                "query",
                Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)],
                f"seconds (at most {MAX_WAIT_SECONDS:g}) to wait for bytes past offset or "
                "the run's end (0: answer at once)",
            ),
        ),
        description="The output workers stream while tasks run (stdout and stderr, merged), "
        "kept per run (attempt) on the master's disk: the first --task-output-max-mib of "
        "it (64 MiB by default). The body is binary (application/octet-stream). Follow a "
        "run by asking again from X-Next-Offset with wait until X-Output-Complete is true "
        "and X-Next-Offset equals X-Output-Size. A task whose worker does not stream (a Go "
        "worker) has no output here (size 0): its logs are in GET /api/tasks/{task_id}/logs.",
    ),
)


def install(app: web.Application, outputs: TaskOutputs) -> None:
    """Give the output endpoint (routed by ``admin_api``) its use case."""
    app[OUTPUT_KEY] = outputs
