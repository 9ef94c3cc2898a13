"""Token text, secrets, records and the join/API checks (cloudai.security.tokens)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cloudai.security.tokens import (
    ApiToken,
    ApiTokenRecord,
    JoinRefused,
    JoinToken,
    JoinTokenRecord,
    Scope,
    TokenFormatError,
    authenticate_api_token,
    check_api,
    check_join,
    check_token_id,
    format_api_token,
    format_join_token,
    format_time,
    hash_secret,
    new_secret,
    new_token_id,
    parse_api_token,
    parse_join_token,
    secret_matches,
    unknown_join_token,
)

CA = "0f" * 32
ID = "3f2a9c1b7e44"
SECRET = "S3cr3t_with-dashes_and_underscores_0123456"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
HASH = hash_secret(SECRET)


def join_record(**kw: object) -> JoinTokenRecord:
    fields: dict[str, object] = {"secret_hash": HASH, "created_at": T0 - timedelta(hours=1)}
    fields.update(kw)
    return JoinTokenRecord(ID, **fields)  # type: ignore[arg-type]


# -- text ------------------------------------------------------------------------------


def test_new_ids_and_secrets_have_the_documented_form() -> None:
    ids = {new_token_id() for _ in range(50)}
    assert len(ids) == 50
    for token_id in ids:
        assert check_token_id(token_id) == token_id
    secret = new_secret()
    assert len(secret) == 43
    assert "." not in secret
    assert new_secret() != secret


def test_join_token_round_trip() -> None:
    text = format_join_token(CA, 8443, ID, SECRET)
    assert text == f"cloudai-join.1.{CA}.8443.{ID}.{SECRET}"
    token = parse_join_token(f"  {text}\n")  # pasted with spaces and a newline
    assert token == JoinToken(CA, 8443, ID, SECRET)
    assert str(token) == text
    assert SECRET not in repr(token)
    fresh = format_join_token(CA, 1, new_token_id(), new_secret())
    assert parse_join_token(fresh).join_port == 1


def test_api_token_round_trip() -> None:
    text = format_api_token(ID, SECRET)
    assert text == f"cloudai.{ID}.{SECRET}"
    token = parse_api_token(text + "\n")
    assert token == ApiToken(ID, SECRET)
    assert str(token) == text
    assert SECRET not in repr(token)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with 'cloudai-join.'"),
        (f"cloudai.{ID}.{SECRET}", r"that is an API token"),
        (f"cloudai-join.2.{CA}.8443.{ID}.{SECRET}", "version '2' is not supported"),
        ("cloudai-join", "version '' is not supported"),
        (f"cloudai-join.1.{CA}.8443.{ID}", "6 dot-separated parts .* this one has 5"),
        (f"cloudai-join.1.{CA.upper()}.8443.{ID}.{SECRET}", "CA fingerprint must be 64"),
        (f"cloudai-join.1.{CA[:-2]}.8443.{ID}.{SECRET}", "CA fingerprint must be 64"),
        (f"cloudai-join.1.{CA}.0.{ID}.{SECRET}", "port '0' is not a port"),
        (f"cloudai-join.1.{CA}.65536.{ID}.{SECRET}", "port '65536' is not a port"),
        (f"cloudai-join.1.{CA}.08443.{ID}.{SECRET}", "port '08443' is not a port"),
        (f"cloudai-join.1.{CA}.http.{ID}.{SECRET}", "port 'http' is not a port"),
        (f"cloudai-join.1.{CA}.8443.3F2A9C1B7E44.{SECRET}", "id must be 12 lower-case hex"),
        (f"cloudai-join.1.{CA}.8443.{ID}.short", "secret must be 16 to 128 characters"),
        (f"cloudai-join.1.{CA}.8443.{ID}.{SECRET[:-1]}+", "secret must be 16 to 128"),
        ("cloudai-join.1." + "x" * 500, "at most 400 characters"),
    ],
)
def test_malformed_join_tokens_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TokenFormatError, match=message) as error:
        parse_join_token(text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Bearer x", "must start with 'cloudai.'"),
        (f"cloudai-join.1.{CA}.8443.{ID}.{SECRET}", "that is a join token"),
        (f"cloudai.{ID}", "3 dot-separated parts .* this one has 2"),
        (f"cloudai.{ID}.{SECRET}.x", "this one has 4"),
        (f"cloudai.{ID[:-1]}.{SECRET}", "id must be 12 lower-case hex"),
        (f"cloudai.{ID}.{'s' * 129}", "secret must be 16 to 128"),
        ("cloudai." + "x" * 500, "at most 400 characters"),
    ],
)
def test_malformed_api_tokens_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(TokenFormatError, match=message):
        parse_api_token(text)


def test_format_refuses_parts_that_would_not_parse() -> None:
    with pytest.raises(TokenFormatError):
        format_join_token(CA, 70000, ID, SECRET)
    with pytest.raises(TokenFormatError):
        format_api_token("nope", SECRET)
    with pytest.raises(TokenFormatError, match=r"'x\.y' is not 12"):
        check_token_id("x.y")


# -- secrets ---------------------------------------------------------------------------


def test_only_the_hash_is_compared() -> None:
    assert hash_secret("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256
    )
    assert SECRET not in HASH
    assert secret_matches(SECRET, HASH)
    assert not secret_matches(SECRET + "x", HASH)
    assert not secret_matches(SECRET, "")


# -- scopes ------------------------------------------------------------------------------


def test_scopes() -> None:
    assert Scope.ADMIN.allows(Scope.ADMIN)
    assert Scope.ADMIN.allows(Scope.READ)
    assert Scope.READ.allows(Scope.READ)
    assert not Scope.READ.allows(Scope.ADMIN)
    assert Scope("read") is Scope.READ
    assert f"{Scope.ADMIN}" == "admin"


# -- records -----------------------------------------------------------------------------


def test_records_check_their_fields() -> None:
    with pytest.raises(TokenFormatError):
        JoinTokenRecord("bad", HASH, T0)
    with pytest.raises(ValueError, match="secret_hash must be a SHA-256"):
        JoinTokenRecord(ID, SECRET, T0)
    with pytest.raises(ValueError, match="max_uses must be at least 1"):
        JoinTokenRecord(ID, HASH, T0, max_uses=0)
    with pytest.raises(ValueError, match="uses must not be negative"):
        JoinTokenRecord(ID, HASH, T0, uses=-1)
    record = ApiTokenRecord(ID, HASH, "admin", T0)  # type: ignore[arg-type]  # from the store
    assert record.scope is Scope.ADMIN
    with pytest.raises(ValueError):
        ApiTokenRecord(ID, HASH, "root", T0)  # type: ignore[arg-type]


def test_join_token_states() -> None:
    assert join_record().state(T0) == "active"
    assert join_record(expires_at=T0).state(T0) == "expired"
    assert join_record(expires_at=T0 + timedelta(seconds=1)).state(T0) == "active"
    assert join_record(max_uses=1, uses=1).state(T0) == "used up"
    assert join_record(max_uses=2, uses=1).state(T0) == "active"
    revoked = join_record(revoked_at=T0, expires_at=T0, max_uses=1, uses=1)
    assert revoked.state(T0) == "revoked"  # revoked says most


# -- checks ----------------------------------------------------------------------------


def refusal(record: JoinTokenRecord | None, worker_id: str = "gpu-8") -> JoinRefused:
    with pytest.raises(JoinRefused) as refused:
        check_join(record, worker_id, T0)
    assert str(refused.value) == refused.value.message
    return refused.value


def test_check_join_admits_a_valid_token() -> None:
    check_join(join_record(), "gpu-8", T0)
    check_join(join_record(max_uses=3, uses=2, worker_id="gpu-8"), "gpu-8", T0)
    check_join(join_record(expires_at=T0 + timedelta(microseconds=1)), "gpu-8", T0)


def test_check_join_says_which_refusal() -> None:
    unknown = refusal(None)
    assert unknown.reason == "unknown"
    assert unknown.message == "the join token is not known to this master"
    assert unknown_join_token(ID).message == f"join token {ID} is not known to this master"

    expired = refusal(join_record(expires_at=T0))
    assert expired.reason == "expired"
    assert expired.message == f"join token {ID} expired at 2026-12-01 10:00:00 UTC"

    revoked = refusal(join_record(revoked_at=T0 - timedelta(minutes=5)))
    assert revoked.reason == "revoked"
    assert revoked.message == f"join token {ID} was revoked at 2026-12-01 09:55:00 UTC"

    used_up = refusal(join_record(max_uses=1, uses=1))
    assert used_up.reason == "used_up"
    assert used_up.message == f"join token {ID} has been used 1 of 1 times"

    wrong = refusal(join_record(worker_id="gpu-7"))
    assert wrong.reason == "wrong_worker"
    assert wrong.message == f"join token {ID} is for worker 'gpu-7', not 'gpu-8'"


def test_format_time_is_utc_whatever_the_zone() -> None:
    plus2 = T0.astimezone(timezone(timedelta(hours=2)))
    assert format_time(plus2) == "2026-12-01 10:00:00 UTC"


def test_check_api() -> None:
    record = ApiTokenRecord(ID, HASH, Scope.READ, T0, expires_at=T0 + timedelta(hours=1))
    assert check_api(record, T0)
    assert not check_api(record, T0 + timedelta(hours=1))
    assert not check_api(replace(record, revoked_at=T0), T0)
    assert not check_api(None, T0)
    assert record.state(T0) == "active"
    assert replace(record, revoked_at=T0).state(T0) == "revoked"
    assert record.state(T0 + timedelta(hours=2)) == "expired"


def test_authenticate_api_token_is_the_whole_check() -> None:
    record = ApiTokenRecord(ID, HASH, Scope.READ, T0, expires_at=T0 + timedelta(hours=1))
    records = {ID: record}
    text = format_api_token(ID, SECRET)
    assert authenticate_api_token(text, records.get, T0) is Scope.READ
    assert authenticate_api_token(f" {text}\n", records.get, T0) is Scope.READ
    assert authenticate_api_token(text, records.get, T0 + timedelta(hours=1)) is None  # expired
    assert authenticate_api_token(text, {ID: replace(record, revoked_at=T0)}.get, T0) is None
    assert authenticate_api_token(text, {}.get, T0) is None  # unknown
    assert authenticate_api_token(format_api_token(ID, SECRET + "x"), records.get, T0) is None
    for garbage in ("", "cloudai", f"cloudai.{ID}", "Bearer " + text, "x" * 1000):
        assert authenticate_api_token(garbage, records.get, T0) is None
