"""Shared fixtures. PostgreSQL: one fresh, uniquely named database per test session,
created through the server's ``postgres`` database and dropped at the end. Server:
``CLOUDAI_TEST_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/postgres).
Unreachable: PostgreSQL tests are skipped, or fail when the environment variable CI is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.harness import async_wait_until


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True, scope="session")
def _no_user_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A developer's own config file and CLOUDAI_* variables must not steer the tests
    (nor the processes they start, which inherit this environment)."""
    saved = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("CLOUDAI_") or k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME")
    }
    keep = {"CLOUDAI_TEST_PG_URL"}
    for name in saved:
        if name not in keep:
            del os.environ[name]
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    # Clients read a local master's admin.token and CA from the default data dir.
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    try:
        yield
    finally:
        os.environ.pop("XDG_CONFIG_HOME", None)
        os.environ.pop("XDG_DATA_HOME", None)
        os.environ.update(saved)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """Wait until ``predicate()`` is truthy (polling a condition, with a timeout)."""
    return async_wait_until


PG_ADMIN_URL = os.environ.get(
    "CLOUDAI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _admin_connect() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped afterwards."""
    try:
        admin = _admin_connect()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if _in_ci():
            pytest.fail(f"{message} (CI is set: the server must be up)", pytrace=False)
        pytest.skip(message)
    name = f"cloudai_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_connect() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def reset_pg(url: str) -> None:
    """Empty the database: drop and recreate its public schema."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or the URL of an emptied PostgreSQL database."""
    if backend == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_database_url")
    reset_pg(url)
    return url
