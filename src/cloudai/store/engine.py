"""Creating the SQLAlchemy engine for a back end, with its connection settings.

The engine's connection pool is thread-safe: each store call checks a
connection out, uses it in one thread, and returns it.

SQLite: WAL journal (readers do not block the writer), foreign keys enforced,
a busy timeout, and real transactions: SQLAlchemy emits ``BEGIN`` itself
(``BEGIN IMMEDIATE`` for writes, so that two writers queue on the busy timeout
rather than fail on a lock upgrade), which also makes DDL transactional.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

SQLITE_BUSY_TIMEOUT_S = 10.0
WRITE_OPTION = "cloudai_write"
"""Execution option marking a connection whose transaction will write."""


def make_engine(url: URL, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,  # survive a database restart between calls
        pool_recycle=1800,
        connect_args={"connect_timeout": 10, "application_name": "cloudai-master"},
    )


def _sqlite_engine(url: URL, *, pool_size: int, max_overflow: int) -> Engine:
    if url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN from the sqlite3 module
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def sqlite_quick_check(path: Path, max_errors: int = 3) -> str | None:
    """``PRAGMA quick_check`` on an existing SQLite file: None when it is sound, else what
    is wrong, on one line. It reads every page (b-trees, free list, record formats) but
    skips the index-against-table comparison of ``integrity_check``, so it is linear in the
    file's size. A hot WAL left by a crash is replayed first, as any opener would."""
    try:
        conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute(f"PRAGMA quick_check({int(max_errors)})").fetchall()
    except sqlite3.DatabaseError as exc:  # e.g. "file is not a database", "malformed"
        return str(exc)
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows]
    if problems == ["ok"]:
        return None
    return " ".join("; ".join(problems).split())


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (a persistent setting: usually it is on already).

    Switching needs the file to itself and does not wait on the busy timeout, so
    when another connection is switching it at the same time, retry.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
