"""The master's dashboard routes over HTTP (aiohttp on loopback): the page and its files
are open, with their headers; a missing build answers one line; data needs a token."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from cloudai.master import dashboard
from cloudai.master.http_auth import install_auth
from cloudai.security.tokens import Scope


async def _data(request: web.Request) -> web.Response:
    return web.json_response([])


def _app(web_dir: Path) -> web.Application:
    app = web.Application()
    dashboard.add_routes(app, web_dir)
    app.router.add_get("/api/workers", _data)
    install_auth(app, lambda token: Scope.READ if token == "good" else None)
    return app


def _built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<script src="/assets/index-1.js"></script>')
    (tmp_path / "assets" / "index-1.js").write_text("console.log(1)")
    (tmp_path / "assets" / "index-1.css").write_text("body{}")
    (tmp_path / "token.txt").write_text("secret")
    return tmp_path


async def test_page_and_assets_are_served_open_data_is_not(tmp_path: Path) -> None:
    async with TestServer(_app(_built(tmp_path))) as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "/assets/index-1.js" in await response.text()
        async with http.get(server.make_url("/assets/index-1.js")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/javascript"
            assert "immutable" in response.headers["Cache-Control"]
        async with http.head(server.make_url("/assets/index-1.css")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/css"
        for path in ("/assets/missing.js", "/assets/..%2ftoken.txt", "/token.txt"):
            async with http.get(server.make_url(path)) as response:
                assert response.status == 404, path
        async with http.post(server.make_url("/")) as response:
            assert response.status in (401, 405)
        async with http.get(server.make_url("/api/workers")) as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer good"}
        async with http.get(server.make_url("/api/workers"), headers=headers) as response:
            assert response.status == 200


async def test_a_missing_build_answers_one_line(tmp_path: Path) -> None:
    async with TestServer(_app(tmp_path)) as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as response:
            assert response.status == 200
            assert "dashboard was not built" in await response.text()
        async with http.get(server.make_url("/assets/index-1.js")) as response:
            assert response.status == 404
