"""`cloudai token` and `cloudai api-token`: durations, listings, usage (no master: the
calls over HTTPS are in tests/integration/test_http_auth.py)."""

from __future__ import annotations

import pytest

from cloudai import views
from cloudai.api.models import ApiTokenInfo, JoinTokenInfo
from cloudai.cli import tokens
from cloudai.cli.main import build_parser
from cloudai.cli.tokens import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        (" 1H ", 3600),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1y", "h", "-1h", "0", "0m", "1h 30", "1e3", "m30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_read_back() -> None:
    assert [format_duration(s) for s in (45, 1800, 3600, 5400, 7 * 86400 + 7200, 0)] == [
        "45s", "30m", "1h", "1h30m", "7d2h", "0s",
    ]  # fmt: skip


def _join(token_id: str, created: float, **fields: object) -> JoinTokenInfo:
    return JoinTokenInfo.model_validate(
        {"token_id": token_id, "created_at": created, "state": "active", **fields}
    )


def test_join_token_rows() -> None:
    rows = [
        _join("bbbbbbbbbbbb", 20.0, uses=1, max_uses=1, state="used up", worker_id="w1"),
        _join("aaaaaaaaaaaa", 10.0, expires_at=3610.0, description="rack\t4"),
    ]
    lines = tokens.plain_join_tokens(rows).splitlines()
    assert lines[0].split("\t") == list(tokens.JOIN_COLUMNS)
    assert lines[1].split("\t") == [
        "aaaaaaaaaaaa", "active", "0", "-", "-", "10.0", "3610.0", "-", "rack\\t4",
    ]  # fmt: skip
    assert lines[2].split("\t")[:5] == ["bbbbbbbbbbbb", "used up", "1", "1", "w1"]
    text = views.render_text(tokens.join_tokens_table(rows, now=70.0), width=120)
    assert "0/any" in text and "1/1" in text and "in 59m00s" in text and "used up" in text
    assert "no join tokens" in views.render_text(tokens.join_tokens_table([], 0.0))


def test_api_token_rows() -> None:
    info = ApiTokenInfo.model_validate(
        {"token_id": "cccccccccccc", "scope": "read", "name": "grafana", "created_at": 5.0,
         "state": "revoked", "revoked_at": 6.0}
    )  # fmt: skip
    lines = tokens.plain_api_tokens([info]).splitlines()
    assert lines[0].split("\t") == list(tokens.API_COLUMNS)
    assert lines[1].split("\t") == [
        "cccccccccccc", "read", "revoked", "grafana", "5.0", "-", "6.0",
    ]  # fmt: skip
    text = views.render_text(tokens.api_tokens_table([info], now=65.0), width=120)
    assert "grafana" in text and "never" in text and "1m00s ago" in text


def test_the_commands_parse() -> None:
    parser = build_parser("token")
    args = parser.parse_args(
        ["token", "create", "--ttl", "1h", "--uses", "3", "--worker-id", "w1", "--url", "m:1"]
    )
    assert (args.ttl, args.uses, args.worker_id, args.url) == (3600.0, 3, "w1", "m:1")
    assert args.func is tokens.run_join_create
    args = build_parser("api-token").parse_args(["api-token", "create", "--scope", "read"])
    assert (args.scope, args.name, args.ttl) == ("read", "", None)
    args = build_parser("token").parse_args(["token", "list", "--plain"])
    assert args.plain and args.func is tokens.run_join_list


def test_a_group_without_a_command_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser("token").parse_args(["token"])
    assert args.func(args) == 2
    assert "create" in capsys.readouterr().err
