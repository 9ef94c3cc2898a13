"""Who may call what on the master's HTTP port, and the TLS it is served with.

The policy is one pure function, ``decide(method, path, scope)``: ``GET /health``,
``POST /api/join`` and reads of the web dashboard's page and files (``/``,
``/assets/NAME``: they hold no data) are open; reads (``GET``, ``HEAD``) of
``/api/...``, the telemetry WebSockets (``/ws/telemetry[/{worker_id}]``) and the
Prometheus metrics (``/metrics``) need a token of scope ``read`` (or ``admin``);
everything else needs ``admin``. ``install_auth`` puts a middleware in front of every
route of the app (the admin API, the WebSockets and the metrics alike) that applies it:

- the token comes from ``Authorization: Bearer <token>``; a WebSocket may also give it
  as the ``token`` query parameter or the ``cloudai_token`` cookie (browsers cannot set
  headers on a WebSocket);
- 401 (with ``WWW-Authenticate: Bearer``) without a token or with one the master does
  not accept; 403 for a ``read`` token on a call that needs ``admin``;
- a peer (the connection's address) that presented wrong tokens too often is answered
  429 with ``Retry-After`` until the window lets it try again, whatever it sends; its
  failures are logged at most once a minute, one line each;
- every refusal is the API's JSON ``{"error": "one line"}``.

Without an ``authenticate`` function (``--insecure``, to interoperate with peers that
speak the plain protocol) the middleware is not installed and the admin API keeps its
historic rule (see ``admin_api.check_admin``): reads open, mutations from loopback or
with ``CLOUDAI_ADMIN_TOKEN``.
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from cloudai.api.models import ErrorBody
from cloudai.security.limiter import FailureLimiter, LogOnce
from cloudai.security.tokens import Scope

log = logging.getLogger(__name__)

Authenticate = Callable[[str], Scope | None]
"""The scope of a token's text, or None when the master does not accept it."""

OPEN = frozenset(
    {("GET", "/health"), ("HEAD", "/health"), ("GET", "/api/ca"), ("POST", "/api/join")}
)
"""(method, path) pairs anyone may call."""
READS = frozenset({"GET", "HEAD"})
STREAM_PATH = "/ws/telemetry"
METRICS_PATH = "/metrics"
DASHBOARD_PAGE = "/"
DASHBOARD_ASSETS = "/assets/"
"""The web dashboard: its page and its built files hold no data (every call the page
makes asks for a token), so reading them is open."""
SCOPE = web.RequestKey("cloudai_scope", Scope)
"""Where the middleware leaves the scope of the caller's token, on the request."""
TOKEN_QUERY = "token"
TOKEN_COOKIE = "cloudai_token"
"""Where a WebSocket client may put its token besides the Authorization header."""


class Verdict(enum.IntEnum):
    """The policy's answer: allowed, or the status code of the refusal."""

    ALLOWED = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403


def is_stream(path: str) -> bool:
    return path == STREAM_PATH or path.startswith(STREAM_PATH + "/")


def is_dashboard_file(method: str, path: str) -> bool:
    """A read of the dashboard's page (``/``) or of one of its files (``/assets/NAME``,
    one path component; the route's template ``/assets/{name}`` too)."""
    if method.upper() not in READS:
        return False
    if path == DASHBOARD_PAGE:
        return True
    name = path.removeprefix(DASHBOARD_ASSETS)
    return name != path and name != "" and "/" not in name


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a call needs; None: anyone may make it. ``path`` is the request's path
    or its route's template (``/api/workers/{worker_id}``): the answer is the same."""
    method = method.upper()
    if (method, path) in OPEN or is_dashboard_file(method, path):
        return None
    if method in READS and (
        path == "/api" or path.startswith("/api/") or is_stream(path) or path == METRICS_PATH
    ):
        return Scope.READ
    return Scope.ADMIN


def decide(method: str, path: str, presented: Scope | None) -> Verdict:
    """Whether a call with a token of scope ``presented`` (None: no token, or one the
    master does not accept) may go on. Pure: the policy, unit-tested."""
    needed = required_scope(method, path)
    if needed is None:
        return Verdict.ALLOWED
    if presented is None:
        return Verdict.UNAUTHENTICATED
    return Verdict.ALLOWED if presented.allows(needed) else Verdict.FORBIDDEN


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: no such header)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def presented_token(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    cookies: Mapping[str, str],
    stream: bool,
) -> str | None:
    """The token a request carries: the Authorization header; for a WebSocket, else the
    ``token`` query parameter, else the ``cloudai_token`` cookie."""
    token = bearer_token(headers.get("Authorization"))
    if token is None and stream:
        token = query.get(TOKEN_QUERY) or cookies.get(TOKEN_COOKIE) or None
    return token


# -- refusals ---------------------------------------------------------------------------------

NO_TOKEN = (
    "this call needs an API token: Authorization: Bearer <token> (see 'cloudai login'; "
    "the master's admin token is in its data dir, admin.token)"
)
BAD_TOKEN = "the token is not accepted by this master (unknown, expired or revoked)"
NEEDS_ADMIN = "this call needs a token of scope admin; the one given has scope read"


def too_many(wait: float) -> str:
    return f"too many failed authentications from this address; try again in {wait:.0f} s"


def retry_after(wait: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, int(wait + 0.999)))


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A refusal in the API's shape: ``{"error": "one line"}``."""
    return web.Response(
        body=ErrorBody(error=message).model_dump_json().encode(),
        status=status,
        content_type="application/json",
        headers=dict(headers) if headers else None,
    )


def unauthenticated(message: str) -> web.Response:
    return error_response(401, message, {"WWW-Authenticate": "Bearer"})


# -- the middleware ---------------------------------------------------------------------------


@dataclass(slots=True)
class HttpAuth:
    """What the middleware needs: the token check, the failure limiter and the log gate."""

    authenticate: Authenticate
    limiter: FailureLimiter
    log_gate: LogOnce

    def check(self, request: web.Request, path: str) -> web.StreamResponse | None:
        """The refusal of ``request`` (whose route is ``path``), or None to let it in."""
        needed = required_scope(request.method, path)
        if needed is None:
            return None
        peer = request.remote or "?"
        wait = self.limiter.blocked(peer)
        if wait > 0:
            return error_response(429, too_many(wait), {"Retry-After": retry_after(wait)})
        token = presented_token(request.headers, request.query, request.cookies, is_stream(path))
        if token is None:
            return unauthenticated(NO_TOKEN)
        scope = self.authenticate(token)
        if scope is None:
            self.limiter.failed(peer)
            self._log_failure(peer, request)
            return unauthenticated(BAD_TOKEN)
        self.limiter.succeeded(peer)
        request[SCOPE] = scope
        if decide(request.method, path, scope) is Verdict.FORBIDDEN:
            return error_response(403, NEEDS_ADMIN)
        return None

    def _log_failure(self, peer: str, request: web.Request) -> None:
        left_out = self.log_gate.allow(peer)
        if left_out is None:
            return
        more = f" ({left_out} more since the last line)" if left_out else ""
        log.warning(
            "HTTP: %s sent a token that is not accepted (%s %s)%s",
            peer,
            request.method,
            _shown(request.rel_url.raw_path),
            more,
        )


AUTH_KEY = web.AppKey("http_auth", HttpAuth)


def _shown(path: str) -> str:
    return path if len(path) <= 120 else path[:117] + "..."


def _route_path(request: web.Request) -> str | None:
    """The template of the route ``request`` matched; None when it matched none (404,
    405: those answers are the router's, given before any token is asked for)."""
    match = request.match_info
    if match.http_exception is not None:
        return None
    route = match.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else request.path


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Applies the policy to every route of the app before its handler runs."""
    path = _route_path(request)
    if path is not None:
        refusal = request.app[AUTH_KEY].check(request, path)
        if refusal is not None:
            return refusal
    return await handler(request)


def install_auth(
    app: web.Application,
    authenticate: Authenticate | None,
    limiter: FailureLimiter | None = None,
    log_gate: LogOnce | None = None,
) -> None:
    """Require tokens on ``app`` (call it before the app starts; any time after
    ``create_app``). ``authenticate`` None (``--insecure``): nothing changes, the admin
    API keeps its historic rule. ``limiter`` defaults to 10 failures a minute per peer."""
    if authenticate is None:
        return
    app[AUTH_KEY] = HttpAuth(
        authenticate,
        FailureLimiter() if limiter is None else limiter,  # (an empty one is falsy)
        LogOnce() if log_gate is None else log_gate,
    )
    app.middlewares.insert(0, auth_middleware)  # outermost: before any other middleware


def is_secured(app: web.Application) -> bool:
    """True if ``install_auth`` required tokens on ``app``."""
    return AUTH_KEY in app


# -- TLS --------------------------------------------------------------------------------------


def server_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server side of HTTPS and WSS: ``cert_file`` (the certificate, then any
    intermediates, PEM) and its ``key_file``; TLS 1.2 or later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
