"""The duplicate cache (RFC 5080 2.2.2): window, replacement, bound."""

from __future__ import annotations

from nac.radius.dedup import DuplicateCache


def test_window_and_replacement() -> None:
    cache = DuplicateCache(window=5.0)
    key = ("127.0.0.1", 1000, 7, b"a" * 16)
    assert cache.get(key, 0.0) is None
    cache.put(key, b"", 0.0)  # in progress: a retransmission gets nothing
    assert cache.get(key, 1.0) == b""
    cache.put(key, b"reply", 1.0)
    assert cache.get(key, 5.9) == b"reply"
    assert cache.get(key, 6.1) is None  # older than the window


def test_expire_drops_only_the_old_and_keeps_order() -> None:
    cache = DuplicateCache(window=5.0)
    for i in range(10):
        cache.put(("h", 1, i, b""), b"r%d" % i, float(i))
    cache.put(("h", 1, 0, b""), b"again", 9.5)  # put again: now the newest
    cache.expire(10.0)  # cutoff 5.0: entries from 1.0 to 4.0 go
    assert len(cache) == 6
    assert cache.get(("h", 1, 0, b""), 10.0) == b"again"
    assert cache.get(("h", 1, 5, b""), 10.0) == b"r5"
    assert cache.get(("h", 1, 4, b""), 10.0) is None


def test_bounded_drops_the_oldest_first() -> None:
    cache = DuplicateCache(window=5.0, max_entries=100)
    for i in range(1000):
        cache.put(("h", 1, i, b""), b"r", 0.0)
        assert len(cache) <= 100
    assert cache.get(("h", 1, 999, b""), 0.0) == b"r"  # the newest stay
    assert cache.get(("h", 1, 0, b""), 0.0) is None
    assert len(cache) >= 90


def test_get_drops_a_stale_entry_so_add_can_store_without_looking() -> None:
    cache = DuplicateCache(window=5.0)
    for i in range(3):
        cache.put(("h", 1, i, b""), b"r%d" % i, float(i))
    assert cache.get(("h", 1, 0, b""), 5.5) is None  # stale: gone now
    assert len(cache) == 2
    cache.add(("h", 1, 0, b""), b"new", 5.5)  # after get(): the newest, last in order
    cache.expire(6.5)  # cutoff 1.5: only (h, 1, 1) is older
    assert len(cache) == 2
    assert cache.get(("h", 1, 0, b""), 6.5) == b"new"
    assert cache.get(("h", 1, 2, b""), 6.5) == b"r2"


def test_add_is_bounded_too() -> None:
    cache = DuplicateCache(window=5.0, max_entries=100)
    for i in range(1000):
        cache.add(("h", 1, i, b""), b"r", 0.0)
        assert len(cache) <= 100
    assert cache.get(("h", 1, 999, b""), 0.0) == b"r"
