"""The gateway's session cache: grants bound to a certificate, forget, reset, bound."""

from __future__ import annotations

from cloudai.gateway.sessions import SessionCache, certificate_key


def test_a_grant_holds_only_for_its_certificate() -> None:
    cache = SessionCache()
    key = certificate_key(b"pem of w1")
    cache.grant("w1", key)
    assert cache.holds("w1", key)
    assert not cache.holds("w1", certificate_key(b"another pem"))
    assert not cache.holds("w1", "")  # plaintext is not the certificate
    assert not cache.holds("w2", key)
    assert certificate_key(b"") == ""


def test_forget_and_reset() -> None:
    cache = SessionCache()
    cache.grant("w1", "")
    cache.grant("w2", "")
    cache.forget("w1")
    cache.forget("nobody")
    assert not cache.holds("w1", "") and cache.holds("w2", "")
    assert cache.forgotten == 1
    assert not cache.reset("boot-1") or len(cache) == 0  # first master seen: forgets all
    cache.grant("w2", "")
    assert not cache.reset("boot-1")  # the same master again: nothing to forget
    assert cache.holds("w2", "")
    assert cache.reset("boot-2")  # a restarted master
    assert len(cache) == 0 and cache.resets == 2


def test_the_cache_is_bounded() -> None:
    cache = SessionCache(limit=3)
    for i in range(3):
        cache.grant(f"w{i}", "")
    cache.grant("w1", "")  # known: no eviction
    assert len(cache) == 3
    cache.grant("w9", "")
    assert len(cache) == 1 and cache.holds("w9", "")
