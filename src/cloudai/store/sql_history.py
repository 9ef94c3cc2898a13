"""The telemetry history tables of ``SqlStore`` (docs/HISTORY.md), as a mixin: the same
SQLAlchemy Core statements on SQLite and PostgreSQL.

Rows are tuples in column order (``worker_id``, ``t``, for tiers 1 and 2 ``samples``,
then each metric of ``schema.HISTORY_METRICS``, for tiers 1 and 2 followed by
``<metric>_min`` and ``<metric>_max``) or mappings keyed by column name: the store knows
the columns, not how their values are computed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Float,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
)

from cloudai.store import schema

HistoryRow = Mapping[str, Any] | Sequence[Any]
"""A row: a mapping of column names, or every column's value in the table's order."""
METRICS = schema.HISTORY_METRICS
TABLES = schema.HISTORY_TABLES


class SqlHistory:
    """Write, prune, recover and query the history tiers on the store's connections."""

    if TYPE_CHECKING:

        @property
        def backend(self) -> str: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

        def _insert(self, table: Table) -> Any: ...

    # -- writing ---------------------------------------------------------------------------

    def write_history(
        self,
        raw: Sequence[HistoryRow],
        minutes: Sequence[HistoryRow] = (),
        hours: Sequence[HistoryRow] = (),
    ) -> None:
        if not (raw or minutes or hours):
            return
        # The hot batch (every heartbeat of every worker, every second): one driver-level
        # executemany per tier of values in column order, rather than SQLAlchemy's per-row
        # bind processing, so that the writer thread holds the GIL briefly.
        with self._write() as conn:  # one transaction
            for table, rows in zip(TABLES, (raw, minutes, hours), strict=True):
                if rows:
                    conn.exec_driver_sql(self._history_insert(table), _in_order(table, rows))

    def _history_insert(self, table: Table) -> str:
        """INSERT of every column; a duplicate tier 0 row is ignored, a bucket written
        partial at a stop and rebuilt after the restart replaces the stored one."""
        names = [c.name for c in table.columns]
        mark = "?" if self.backend == "sqlite" else "%s"
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) "
            f"VALUES ({', '.join([mark] * len(names))}) ON CONFLICT (worker_id, t) DO "
        )
        if table is TABLES[0]:
            return sql + "NOTHING"
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in ("worker_id", "t"))
        return sql + "UPDATE SET " + updates

    def prune_history(self, cutoffs: Sequence[float]) -> int:
        """Delete the rows of tier i older than ``cutoffs[i]`` (Unix seconds), through the
        time index; the number of rows deleted."""
        deleted = 0
        with self._write() as conn:
            for table, cutoff in zip(TABLES, cutoffs, strict=False):
                deleted += int(conn.execute(delete(table).where(table.c.t < cutoff)).rowcount)
        return deleted

    # -- recovery at start -----------------------------------------------------------------

    def recover_history(
        self, minute_start: float, hour_start: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What is stored of the buckets open at ``minute_start`` (tier 0 rows from then
        on, per worker) and ``hour_start`` (tier 1 rows from the hour's start to
        ``minute_start``, per worker), as tier 1 rows: the master reopens those buckets."""
        raw, minute = TABLES[0], TABLES[1]
        raw_columns: list[Any] = [raw.c.worker_id, func.count().label("samples")]
        for m in METRICS:
            col = raw.c[m]
            raw_columns += [
                func.avg(col).label(m),
                func.min(col).label(f"{m}_min"),
                func.max(col).label(f"{m}_max"),
            ]
        minutes_stmt = select(*raw_columns).where(raw.c.t >= minute_start).group_by(raw.c.worker_id)
        hour_columns: list[Any] = [minute.c.worker_id, func.sum(minute.c.samples).label("samples")]
        for m in METRICS:
            hour_columns += [
                _weighted_avg(minute.c[m], minute.c.samples).label(m),
                func.min(minute.c[f"{m}_min"]).label(f"{m}_min"),
                func.max(minute.c[f"{m}_max"]).label(f"{m}_max"),
            ]
        hours_stmt = (
            select(*hour_columns)
            .where(and_(minute.c.t >= hour_start, minute.c.t < minute_start))
            .group_by(minute.c.worker_id)
        )
        with self._read() as conn:
            minutes = [dict(row._mapping, t=minute_start) for row in conn.execute(minutes_stmt)]
            hours = [dict(row._mapping, t=hour_start) for row in conn.execute(hours_stmt)]
        return minutes, hours

    # -- queries ---------------------------------------------------------------------------

    def query_history(
        self,
        tier: int,
        worker_id: str | None,
        metrics: Sequence[str],
        start: float,
        end: float,
        step: float,
    ) -> list[tuple[Any, ...]]:
        """Rows of ``tier`` in ``[start, end)`` grouped into buckets of ``step`` seconds:
        ``(k, workers, avg, min, max, avg, min, max, ...)`` per bucket ``k`` that has data
        (``start + k*step`` is its start), the three figures for each of ``metrics`` in
        order. ``worker_id`` None: every worker; a bucket's figures are then the average
        of the workers' averages, the least minimum and the greatest maximum, and
        ``workers`` how many workers had data in it (1 for one worker)."""
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown history metrics: {', '.join(unknown)}")
        if not 0 <= tier < len(TABLES):
            raise ValueError(f"no history tier {tier}")
        stmt = _query_statement(self.backend, tier, tuple(metrics), worker_id is not None)
        params: dict[str, Any] = {"hist_start": start, "hist_end": end, "hist_step": step}
        if worker_id is not None:
            params["hist_worker"] = worker_id
        with self._read() as conn:
            return [tuple(row) for row in conn.execute(stmt, params)]


@functools.lru_cache(maxsize=256)
def _query_statement(backend: str, tier: int, metrics: tuple[str, ...], one: bool) -> Select[Any]:
    """The bucketing query, built once per shape (a statement is immutable; the values
    are bound at execution): building it costs more than running it on a day of
    minutes."""
    table = TABLES[tier]
    start = bindparam("hist_start", type_=Float)
    offset = (table.c.t - start) / bindparam("hist_step", type_=Float)
    if backend == "postgresql":
        index: ColumnElement[Any] = cast(func.floor(offset), Integer)
    else:
        index = cast(offset, Integer)  # t >= start: truncation is the floor
    k = index.label("k")
    figures: list[Any] = []
    for m in metrics:
        if tier == 0:
            figures += [func.avg(table.c[m]), func.min(table.c[m]), func.max(table.c[m])]
        else:
            figures += [
                _weighted_avg(table.c[m], table.c.samples),
                func.min(table.c[f"{m}_min"]),
                func.max(table.c[f"{m}_max"]),
            ]
    where = and_(table.c.t >= start, table.c.t < bindparam("hist_end", type_=Float))
    if one:
        return (
            select(k, literal_column("1"), *figures)
            .where(and_(table.c.worker_id == bindparam("hist_worker"), where))
            .group_by(literal_column("k"))
            .order_by(literal_column("k"))
        )
    names = [f"f{i}" for i in range(len(figures))]
    inner = (
        select(k, *(f.label(n) for f, n in zip(figures, names, strict=True)))
        .where(where)
        .group_by(table.c.worker_id, literal_column("k"))
        .subquery()
    )
    outer: list[Any] = [inner.c.k, func.count()]
    for i in range(0, len(names), 3):
        avg, low, high = names[i : i + 3]
        outer += [func.avg(inner.c[avg]), func.min(inner.c[low]), func.max(inner.c[high])]
    return select(*outer).group_by(inner.c.k).order_by(inner.c.k)


def _in_order(table: Table, rows: Sequence[HistoryRow]) -> Sequence[Sequence[Any]]:
    """Rows as the INSERT takes them: tuples in column order pass as they are; mappings
    are put in order (a metric not given is NULL)."""
    if not isinstance(rows[0], Mapping):
        return rows  # type: ignore[return-value]
    names = [c.name for c in table.columns]
    return [tuple(row.get(name) for name in names) for row in rows]  # type: ignore[union-attr]


def _weighted_avg(avg: Column[Any], samples: Column[Any]) -> ColumnElement[Any]:
    """The average of bucket averages, each weighing its number of samples."""
    weight = case((avg.is_(None), 0), else_=samples)
    return func.sum(avg * samples) / func.nullif(func.sum(weight), 0)
