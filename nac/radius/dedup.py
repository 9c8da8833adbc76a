"""RFC 5080 2.2.2 duplicate detection: same source, identifier and authenticator -> same reply."""

from __future__ import annotations

from itertools import islice

DUPLICATE_WINDOW = 5.0


class DuplicateCache:
    """Replies by (source address, source port, identifier, request authenticator).

    A request seen but still being processed maps to b"" so a retransmission arriving
    meanwhile is dropped, not processed twice. Clock-free: callers pass `now`.
    """

    def __init__(self, window: float = DUPLICATE_WINDOW, max_entries: int = 200_000) -> None:
        self.window = window
        self.max_entries = max_entries
        # A plain dict keeps insertion order too, and costs less per request than an
        # OrderedDict: an entry put again is removed first, so the oldest stays first.
        self._entries: dict[tuple[object, ...], tuple[float, bytes]] = {}

    def get(self, key: tuple[object, ...], now: float) -> bytes | None:
        """The reply for `key` within the window, else None, and then `key` is not held
        (a stale entry goes now): `add` may store it without looking first."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if now - hit[0] > self.window:
            del self._entries[key]
            return None
        return hit[1]

    def add(self, key: tuple[object, ...], reply: bytes, now: float) -> None:
        """put() for a key that get() has just reported absent: one dict operation less
        per request (a key in a dict of ~10^5 entries is a cache miss)."""
        entries = self._entries
        entries[key] = (now, reply)
        if len(entries) > self.max_entries:
            self._evict()

    def put(self, key: tuple[object, ...], reply: bytes, now: float) -> None:
        entries = self._entries
        if key in entries:
            del entries[key]
        entries[key] = (now, reply)
        if len(entries) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        # The oldest tenth at once: finding a dict's first entry walks the holes that
        # earlier deletions left at its front, so one at a time would cost O(n) each.
        entries = self._entries
        for old in list(islice(entries, len(entries) - self.max_entries * 9 // 10)):
            del entries[old]

    def expire(self, now: float) -> None:
        entries = self._entries
        cutoff = now - self.window
        stale = []
        for key, (t, _) in entries.items():
            if t >= cutoff:
                break
            stale.append(key)
        for key in stale:
            del entries[key]

    def __len__(self) -> int:
        return len(self._entries)
