"""Tokens: `cloudai token create|list|revoke` and `cloudai api-token create|list|revoke`.

A **join token** lets machines join the cluster as workers (``cloudai worker --master
HOST:PORT --join TOKEN``); an **API token** lets a person or a program use the HTTP API,
with scope ``read`` (GETs and the telemetry streams) or ``admin`` (everything). The
master keeps only a hash of each: a new token's text is printed once, on stdout (the
rest goes to stderr, so that ``TOKEN=$(cloudai token create)`` captures the token alone).

The connection and output options are those of the other client commands
(``cli/admin.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.table import Table
from rich.text import Text

from cloudai import views
from cloudai.api.models import (
    ApiTokenInfo,
    CreatedApiToken,
    CreatedJoinToken,
    JoinTokenInfo,
)
from cloudai.cli.admin import (
    call_api,
    connection_options,
    output_options,
    plain_rows,
)
from cloudai.security.tokens import Scope

# -- durations ---------------------------------------------------------------------------------

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``3600`` (seconds), ``90s``, ``30m``, ``1h``, ``7d``, ``2w``,
    or several together (``1h30m``). ValueError, with the accepted forms, otherwise."""
    spec = text.strip().lower()
    total = 0.0
    position = 0
    for match in _DURATION.finditer(spec):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not spec or position != len(spec):
        raise ValueError(
            f"expected a duration such as 3600 (seconds), 90s, 30m, 1h, 7d or 1h30m, got {text!r}"
        )
    if total <= 0:
        raise ValueError(f"a duration must be more than 0 seconds, got {text!r}")
    return total


JOIN_TOKEN_TTL = 24 * 3600.0
"""A join token from the CLI expires after a day unless told otherwise: a token left in a
shell history or a ticket should not admit workers for ever."""


def _duration_or_never(text: str) -> float | None:
    if text.strip().lower() == "never":
        return None
    return _duration(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """``45s``, ``30m``, ``1h``, ``1h30m``, ``7d``: the largest units, at most two."""
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


# -- the commands ------------------------------------------------------------------------------

JOIN_SUMMARY = "join tokens: let machines join the cluster as workers"
API_SUMMARY = "API tokens: let people and programs use the master's API"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connection = connection_options()
    output, listing = output_options(listing=False), output_options(listing=True)

    def command_group(name: str, summary: str, description: str) -> Any:
        parser = subparsers.add_parser(name, help=summary, description=description)
        parser.set_defaults(func=lambda args: _usage(parser))
        return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", title="commands")

    def add(
        group: Any,
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], int],
        lists: bool = False,
        description: str = "",
    ) -> argparse.ArgumentParser:
        parents = [connection, listing if lists else output]
        p: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=description or help_text, parents=parents
        )
        p.set_defaults(func=func, plain=False)
        return p

    join = command_group(
        "token",
        JOIN_SUMMARY,
        "Join tokens let machines join the cluster as workers: 'cloudai worker --master "
        "HOST:PORT --join TOKEN' on the machine. A token can be limited in time, in uses "
        "and to one worker id.",
    )
    p = add(
        join,
        "create",
        "create a join token; prints it, and the command to run on the worker",
        run_join_create,
        description="Create a join token. The token goes to stdout (shown once: the master "
        "keeps only its hash); the command to run on the worker machine goes to stderr.",
    )
    p.add_argument(
        "--ttl",
        type=_duration_or_never,
        default=JOIN_TOKEN_TTL,
        metavar="DURATION",
        help="how long it is valid: 3600 (seconds), 30m, 1h, 7d, or 'never' (until revoked; "
        "default 24h)",
    )
    p.add_argument(
        "--uses", type=_positive, metavar="N", help="how many joins it allows (default: any)"
    )
    p.add_argument("--worker-id", metavar="ID", help="the only worker id it admits (default: any)")
    p.add_argument("--description", default="", metavar="TEXT", help="a note for the list")
    add(join, "list", "list the join tokens, with their state and uses", run_join_list, True)
    p = add(join, "revoke", "revoke a join token", run_join_revoke)
    p.add_argument("token_id", metavar="TOKEN_ID", help="the token's id, as listed")

    api = command_group(
        "api-token",
        API_SUMMARY,
        "API tokens let people and programs use the master's HTTP API and telemetry "
        "streams: scope read may look (GETs, streams), scope admin may do anything.",
    )
    p = add(
        api,
        "create",
        "create an API token; prints it",
        run_api_create,
        description="Create an API token. The token goes to stdout (shown once: the master "
        "keeps only its hash); use it with --token, CLOUDAI_ADMIN_TOKEN or 'cloudai login'.",
    )
    p.add_argument(
        "--scope",
        required=True,
        choices=[scope.value for scope in Scope],
        help="read: GETs and telemetry streams; admin: everything",
    )
    p.add_argument("--name", default="", help="who or what it is for (shown in the list)")
    p.add_argument(
        "--ttl",
        type=_duration,
        metavar="DURATION",
        help="how long it is valid: 3600 (seconds), 30m, 1h, 7d (default: until revoked)",
    )
    add(api, "list", "list the API tokens, with their scope and state", run_api_list, True)
    p = add(api, "revoke", "revoke an API token", run_api_revoke)
    p.add_argument("token_id", metavar="TOKEN_ID", help="the token's id, as listed")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _note(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _limits(expires_at: float | None, now: float) -> str:
    return "no expiry" if expires_at is None else f"expires in {views.format_age(expires_at - now)}"


# join tokens


def run_join_create(args: argparse.Namespace) -> int:
    def show(created: CreatedJoinToken) -> str:
        info = created.info
        limits = [_limits(info.expires_at, time.time())]
        limits.append(
            "any number of joins" if info.max_uses is None else views.plural(info.max_uses, "join")
        )
        limits.append("any worker id" if info.worker_id is None else f"worker {info.worker_id}")
        _note(f"join token {info.token_id} created ({', '.join(limits)}).")
        _note("On the machine that is to join, run:")
        _note(f"  {created.command}")
        return created.token

    return call_api(
        args,
        lambda c: c.create_join_token(
            ttl=args.ttl, uses=args.uses, worker_id=args.worker_id, description=args.description
        ),
        show,
    )


JOIN_COLUMNS = (
    "token_id",
    "state",
    "uses",
    "max_uses",
    "worker_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "description",
)


def plain_join_tokens(tokens: list[JoinTokenInfo]) -> str:
    rows = sorted(tokens, key=lambda t: t.created_at)
    return plain_rows(JOIN_COLUMNS, ([getattr(t, c) for c in JOIN_COLUMNS] for t in rows))


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return views.UNKNOWN
    if moment >= now:
        return f"in {views.format_age(moment - now)}"
    return views.ago(moment, now)


def _state(state: str) -> Text:
    return Text(state, style="green" if state == "active" else "dim")


def join_tokens_table(tokens: list[JoinTokenInfo], now: float) -> Table | Text:
    if not tokens:
        return Text("no join tokens (create one: cloudai token create)")
    table = Table()
    table.add_column("Id", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Uses", justify="right", no_wrap=True)
    table.add_column("Worker", overflow="fold")
    table.add_column("Created", justify="right", no_wrap=True)
    table.add_column("Expires", justify="right", no_wrap=True)
    table.add_column("Description", overflow="fold")
    for token in sorted(tokens, key=lambda t: t.created_at):
        limit = "any" if token.max_uses is None else str(token.max_uses)
        table.add_row(
            token.token_id,
            _state(token.state),
            f"{token.uses}/{limit}",
            views.plain(token.worker_id or "any"),
            views.ago(token.created_at, now),
            "never" if token.expires_at is None else _when(token.expires_at, now),
            views.plain(token.description),
        )
    return table


def run_join_list(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.join_tokens(),
        lambda tokens: join_tokens_table(tokens, time.time()),
        plain_join_tokens,
    )


def run_join_revoke(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.revoke_join_token(args.token_id),
        lambda info: (
            f"join token {info.token_id} revoked (workers that joined with it stay "
            "joined: 'cloudai unregister ID' shuts one out)"
        ),
    )


# API tokens


def run_api_create(args: argparse.Namespace) -> int:
    def show(created: CreatedApiToken) -> str:
        info = created.info
        name = f" {info.name!r}" if info.name else ""
        _note(
            f"API token {info.token_id}{name} created (scope {info.scope}, "
            f"{_limits(info.expires_at, time.time())}). It is shown once; use it with "
            "--token, CLOUDAI_ADMIN_TOKEN or: cloudai login --token TOKEN"
        )
        return created.token

    return call_api(
        args,
        lambda c: c.create_api_token(Scope(args.scope), name=args.name, ttl=args.ttl),
        show,
    )


API_COLUMNS = ("token_id", "scope", "state", "name", "created_at", "expires_at", "revoked_at")


def plain_api_tokens(tokens: list[ApiTokenInfo]) -> str:
    rows = sorted(tokens, key=lambda t: t.created_at)
    return plain_rows(
        API_COLUMNS,
        (
            [str(getattr(t, c)) if c == "scope" else getattr(t, c) for c in API_COLUMNS]
            for t in rows
        ),
    )


def api_tokens_table(tokens: list[ApiTokenInfo], now: float) -> Table | Text:
    if not tokens:
        return Text("no API tokens")
    table = Table()
    table.add_column("Id", no_wrap=True)
    table.add_column("Scope", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Name", overflow="fold")
    table.add_column("Created", justify="right", no_wrap=True)
    table.add_column("Expires", justify="right", no_wrap=True)
    for token in sorted(tokens, key=lambda t: t.created_at):
        table.add_row(
            token.token_id,
            str(token.scope),
            _state(token.state),
            views.plain(token.name),
            views.ago(token.created_at, now),
            "never" if token.expires_at is None else _when(token.expires_at, now),
        )
    return table


def run_api_list(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.api_tokens(),
        lambda tokens: api_tokens_table(tokens, time.time()),
        plain_api_tokens,
    )


def run_api_revoke(args: argparse.Namespace) -> int:
    return call_api(
        args,
        lambda c: c.revoke_api_token(args.token_id),
        lambda info: f"API token {info.token_id} revoked",
    )
