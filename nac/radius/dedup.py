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
        hit = self._entries.get(key)
        if hit is None or now - hit[0] > self.window:
            return None
        return hit[1]

    def put(self, key: tuple[object, ...], reply: bytes, now: float) -> None:
        entries = self._entries
        if key in entries:
            del entries[key]
        entries[key] = (now, reply)
        if len(entries) > self.max_entries:
            # The oldest tenth at once: finding a dict's first entry walks the holes that
            # earlier deletions left at its front, so one at a time would cost O(n) each.
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
