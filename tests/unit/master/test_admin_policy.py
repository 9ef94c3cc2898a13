from __future__ import annotations

import pytest

from cloudai.master.admin_api import check_admin, is_loopback


@pytest.mark.parametrize("remote", ["127.0.0.1", "127.8.9.1", "::1"])
def test_loopback(remote: str) -> None:
    assert is_loopback(remote)


@pytest.mark.parametrize("remote", ["10.0.0.1", "192.168.1.2", "8.8.8.8", "", None, "junk"])
def test_not_loopback(remote: str | None) -> None:
    assert not is_loopback(remote)


def test_reads_are_always_allowed() -> None:
    assert check_admin("GET", "203.0.113.9", None, "secret") is None
    assert check_admin("GET", "203.0.113.9", None, None) is None


def test_without_token_mutations_only_from_loopback() -> None:
    assert check_admin("POST", "127.0.0.1", None, None) is None
    assert "loopback" in (check_admin("POST", "203.0.113.9", None, None) or "")
    assert check_admin("DELETE", "203.0.113.9", "Bearer anything", None) is not None


def test_with_token_everyone_needs_it() -> None:
    assert check_admin("POST", "203.0.113.9", "Bearer secret", "secret") is None
    assert check_admin("POST", "203.0.113.9", "bearer secret", "secret") is None
    assert check_admin("POST", "203.0.113.9", None, "secret") is not None
    assert check_admin("POST", "203.0.113.9", "Bearer wrong", "secret") is not None
    assert check_admin("POST", "127.0.0.1", None, "secret") is not None  # loopback too
    assert check_admin("DELETE", "203.0.113.9", "Basic secret", "secret") is not None
