"""Step-by-step narration of a scenario, with the time of each step and the measurements."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class ScenarioFailed(AssertionError):
    pass


@dataclass
class Story:
    name: str
    out: Callable[[str], None] = print
    t0: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.2f}s] {text}"
        self.lines.append(line)
        self.out(line)

    def note(self, text: str) -> None:
        """An aside for the operator (why the lab does something the way it does)."""
        line = f"          ({text})"
        self.lines.append(line)
        self.out(line)

    def quote(self, text: str) -> None:
        """A line of another program's output, verbatim."""
        line = f"          | {text}"
        self.lines.append(line)
        self.out(line)

    def check(self, ok: bool, claim: str) -> None:
        """State a fact the scenario proves; stop the scenario if it does not hold."""
        self.say(("ok: " if ok else "FAILED: ") + claim)
        if not ok:
            raise ScenarioFailed(f"{self.name}: {claim}")

    def measure(self, key: str, seconds: float) -> float:
        self.timings[key] = seconds
        return seconds


def wait_until(cond: Callable[[], object], timeout: float, what: str,
               interval: float = 0.02) -> float:
    """Poll ``cond`` until true; the seconds it took. Raises ScenarioFailed on timeout.

    The timeout stretches by the lab's time scale (slow emulated test VMs: netns.time_scale).
    """
    from nac.lab.netns import time_scale

    timeout *= time_scale()
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise ScenarioFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
