"""Database URLs: which back end a URL names, and the driver SQLAlchemy should use.

- none given: SQLite, the file ``cloudai.db`` in the data directory;
- ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``: SQLite, that file;
- ``postgresql://``, ``postgres://``, ``postgresql+psycopg://``: PostgreSQL via psycopg 3.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SQLITE_FILENAME = "cloudai.db"

_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite", database=str(path))


def default_sqlite_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / SQLITE_FILENAME


def resolve_url(database_url: str | None, data_dir: Path) -> URL:
    """The SQLAlchemy URL to open; ``ValueError`` for one the store does not support."""
    if not database_url:
        return sqlite_url(default_sqlite_path(data_dir))
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ValueError(
            "invalid database URL: expected postgresql://user@host:port/dbname"
            " or sqlite:///path/to/file.db"
        ) from None
    driver = url.drivername
    if driver in _POSTGRES_DRIVERS:
        return url.set(drivername="postgresql+psycopg")
    if driver in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            raise ValueError(
                "an in-memory or URI SQLite database is not supported: give a file,"
                " e.g. sqlite:////var/lib/cloudai/cloudai.db"
            )
        return url.set(drivername="sqlite")
    raise ValueError(f"unsupported database URL scheme {driver!r}: use postgresql:// or sqlite:///")


def display_url(url: URL) -> str:
    """The URL as text with any password masked."""
    return url.render_as_string(hide_password=True)
