"""The telemetry history endpoints of the admin API (docs/HISTORY.md):
``GET /api/workers/{worker_id}/history`` and ``GET /api/history`` (the cluster). Read
scope, like every GET under /api; refusals are ``AdminError``s, which ``admin_api``'s
middleware turns into ``{"error"}`` answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from aiohttp import web

from cloudai.api.models import (
    ClusterHistory,
    ErrorBody,
    HistoryFilter,
    HistoryMetrics,
    HistoryPoints,
    Identifier,
    UnixTime,
    WorkerHistory,
)
from cloudai.history.query import QueryError
from cloudai.history.recorder import HistoryRecorder
from cloudai.identifiers import check_id
from cloudai.master.api_input import read_query
from cloudai.master.cluster_admin import AdminError, ErrorKind
from cloudai.master.openapi import Operation, Param, Reply


class HistoryAccess:
    """What the endpoints need: the recorder and whether a worker id is known."""

    def __init__(self, recorder: HistoryRecorder, known: Callable[[str], bool]) -> None:
        self.recorder = recorder
        self.known = known


HISTORY_KEY = web.AppKey("history", HistoryAccess)


def _access(request: web.Request) -> HistoryAccess:
    access = request.app.get(HISTORY_KEY)
    if access is None:
        raise AdminError(ErrorKind.UNAVAILABLE, "history is off on this master (history_enabled)")
    return access


async def _answer(request: web.Request, worker_id: str | None) -> web.Response:
    access = _access(request)
    query = read_query(request, HistoryFilter, only_known=True)
    try:
        p = access.recorder.plan(query.metrics, query.from_, query.to, query.points)
    except QueryError as exc:
        raise AdminError(ErrorKind.INVALID, str(exc)) from None
    body, buckets = await asyncio.to_thread(access.recorder.query, p, worker_id)
    if worker_id is not None and not buckets and not access.known(worker_id):
        raise AdminError(ErrorKind.NOT_FOUND, f"no worker {worker_id!r} and no history of it")
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def worker_history(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    try:
        check_id("worker_id", worker_id)
    except ValueError as exc:
        raise AdminError(ErrorKind.INVALID, str(exc)) from None
    return await _answer(request, worker_id)


async def cluster_history(request: web.Request) -> web.Response:
    return await _answer(request, None)


def _error(text: str) -> Reply:
    return Reply(text, ErrorBody)


_E400 = _error(
    "Invalid query: an unknown metric or parameter, a time outside 0..1e11, points not 1..10000"
)
_E503 = _error("History is off on this master")
_PARAMS = (
    Param("metrics", "query", HistoryMetrics),
    Param("from", "query", UnixTime, "Unix seconds (default: an hour before to)"),
    Param("to", "query", UnixTime, "Unix seconds (default: now)"),
    Param("points", "query", HistoryPoints),
)
_DESCRIPTION = (
    "The tier is the finest whose retention reaches `from` and that gives about `points` "
    "points (tier 0: every heartbeat, 1: per minute, 2: per hour); its rows are grouped "
    "into at most `points` buckets of `resolution` seconds starting at `from`. Columns: "
    "`t` holds each bucket's start, each series one value per bucket, null without data."
)

HISTORY_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/workers/{worker_id}/history",
        "workerHistory",
        "A worker's telemetry history: min, average and max per metric over a time range",
        {
            200: Reply("The history, one column per figure", WorkerHistory),
            400: _E400,
            404: _error("No such worker and no history of it"),
            503: _E503,
        },
        handler=worker_history,
        params=(Param("worker_id", "path", Identifier, "the worker's id"), *_PARAMS),
        description=_DESCRIPTION,
    ),
    Operation(
        "GET",
        "/api/history",
        "clusterHistory",
        "The cluster's telemetry history: per point the workers' average, least minimum "
        "and greatest maximum",
        {200: Reply("The history, one column per figure", ClusterHistory), 400: _E400, 503: _E503},
        handler=cluster_history,
        params=_PARAMS,
        description=_DESCRIPTION,
    ),
)


def install(app: web.Application, access: HistoryAccess) -> None:
    """Give the history endpoints (routed by ``admin_api``) the recorder."""
    app[HISTORY_KEY] = access
