"""RFC 5080 2.2.2 duplicate detection: same source, identifier and authenticator -> same reply."""

from __future__ import annotations

from collections import OrderedDict

DUPLICATE_WINDOW = 5.0


class DuplicateCache:
    """Replies by (source address, source port, identifier, request authenticator).

    A request seen but still being processed maps to b"" so a retransmission arriving
    meanwhile is dropped, not processed twice. Clock-free: callers pass `now`.
    """

    def __init__(self, window: float = DUPLICATE_WINDOW, max_entries: int = 200_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[object, ...], tuple[float, bytes]] = OrderedDict()

    def get(self, key: tuple[object, ...], now: float) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or now - hit[0] > self.window:
            return None
        return hit[1]

    def put(self, key: tuple[object, ...], reply: bytes, now: float) -> None:
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        entries[key] = (now, reply)
        if len(entries) > self.max_entries:
            entries.popitem(last=False)

    def expire(self, now: float) -> None:
        entries = self._entries
        cutoff = now - self.window
        while entries:
            key, (t, _) = next(iter(entries.items()))
            if t >= cutoff:
                break
            del entries[key]

    def __len__(self) -> int:
        return len(self._entries)
