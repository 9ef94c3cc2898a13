"""Store fixtures: the same tests run on SQLite (a file under tmp_path) and PostgreSQL.

PostgreSQL: one fresh database per test session, named uniquely, created through
the server's ``postgres`` database and dropped at the end; each test starts from
an empty schema. Server: ``CLOUDAI_TEST_PG_URL`` (default
postgresql://postgres@127.0.0.1:5432/postgres). Unreachable: the PostgreSQL
tests are skipped, or fail when the environment variable CI is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudai.store import Store, open_store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def open_(database_url: str | None, data_dir: Path) -> Iterator[Callable[[], Store]]:
    """Opens stores on the test's database ("starts the master"); closes them all after."""
    opened: list[Store] = []

    def _open() -> Store:
        store = open_store(database_url, data_dir)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_: Callable[[], Store]) -> Store:
    return open_()
