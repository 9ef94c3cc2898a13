"""The web dashboard's files, served by the master at ``/`` (aiohttp).

The page is built from ``web/`` (Vite) into the package's ``web`` directory: an
``index.html`` and hashed files under ``assets/``. The page holds no data: it is served
without a token (``http_auth.is_dashboard_file``), and every data call it makes (the
API, the telemetry stream) asks for one. When the package was installed without the
built files (no ``npm`` at install time), ``/`` answers a one-line page that says so.

Only those two kinds of path are served, from that one directory: an asset's name is a
single path component of safe characters, so no request can reach another file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""Where the build puts the dashboard (``src/cloudai/web`` in a checkout)."""
PAGE_PATH = "/"
ASSETS_ROUTE = "/assets/{name}"
ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

NOT_BUILT = (
    "<!doctype html><title>CloudAI</title><p>The dashboard was not built: install "
    "Node.js and npm, then run <code>make run</code> (or <code>pip install .</code>) again. "
    "The API and the telemetry stream work without it.</p>\n"
)

# The page loads only its own files and talks only to its own origin (the WebSocket
# included: 'self' covers ws: and wss: of the same host).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".json": "application/json",
}

WEB_DIR_KEY = web.AppKey("dashboard_dir", Path)


def asset_file(web_dir: Path, name: str) -> Path | None:
    """The built asset ``name`` (one safe path component), or None: not one of ours."""
    if not ASSET_NAME.fullmatch(name) or ".." in name:
        return None
    path = web_dir / "assets" / name
    return path if path.is_file() else None


async def page(request: web.Request) -> web.Response:
    index = request.app[WEB_DIR_KEY] / "index.html"
    headers = {**COMMON_HEADERS, "Cache-Control": "no-cache"}
    try:
        body = index.read_bytes()
    except OSError:
        return web.Response(text=NOT_BUILT, content_type="text/html", headers=headers)
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)


async def asset(request: web.Request) -> web.StreamResponse:
    path = asset_file(request.app[WEB_DIR_KEY], request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    # Names carry a hash of the content: a browser may keep them for good.
    headers = {
        **COMMON_HEADERS,
        "Cache-Control": "public, max-age=31536000, immutable",
        "Content-Type": content_type,
    }
    return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application, web_dir: Path | None = None) -> None:
    """``GET /`` (the page) and ``GET /assets/{name}`` (its built files)."""
    app[WEB_DIR_KEY] = WEB_DIR if web_dir is None else web_dir
    if not (app[WEB_DIR_KEY] / "index.html").is_file():
        log.info("the web dashboard is not built (no npm at install time): / says so")
    app.router.add_get(PAGE_PATH, page)
    app.router.add_get(ASSETS_ROUTE, asset)
