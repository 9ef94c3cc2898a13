"""The dashboard's files: which paths are open, and which files a name can reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudai.master.dashboard import ASSETS_ROUTE, PAGE_PATH, asset_file
from cloudai.master.http_auth import Verdict, decide, is_dashboard_file, required_scope
from cloudai.security.tokens import Scope


@pytest.mark.parametrize("path", [PAGE_PATH, ASSETS_ROUTE, "/assets/index-AbC123.js"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "get"])
def test_the_page_and_its_files_are_open_to_read(method: str, path: str) -> None:
    assert is_dashboard_file(method, path)
    assert required_scope(method, path) is None
    assert decide(method, path, None) is Verdict.ALLOWED


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/"),
        ("DELETE", "/assets/index.js"),
        ("GET", "/assets/"),
        ("GET", "/assets/a/b.js"),
        ("GET", "/assetsx/a.js"),
        ("GET", "/index.html"),
        ("GET", "/api/workers"),
        ("GET", "/ws/telemetry"),
    ],
)
def test_nothing_else_is_opened(method: str, path: str) -> None:
    assert not is_dashboard_file(method, path)
    assert required_scope(method, path) is not None
    assert decide(method, path, None) is Verdict.UNAUTHENTICATED


def test_data_still_needs_read_and_mutations_admin() -> None:
    assert required_scope("GET", "/api/workers/{worker_id}/history") is Scope.READ
    assert required_scope("GET", "/api/tasks/{task_id}/output") is Scope.READ
    assert required_scope("POST", "/api/tasks/{task_id}/cancel") is Scope.ADMIN


def test_an_asset_name_reaches_only_the_assets_directory(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "index-1.js").write_text("x")
    (tmp_path / "index.html").write_text("page")
    (tmp_path / "secret").write_text("no")
    assert asset_file(tmp_path, "index-1.js") == tmp_path / "assets" / "index-1.js"
    for name in ("../secret", "..", ".hidden", "../index.html", "a/b", "", "missing.js", "x" * 200):
        assert asset_file(tmp_path, name) is None, name
