"""Pure rules of the logging service: the per-member token bucket, levels, durations.

Shared by the shipper (on the instance) and the read side (in the API), with the time passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.observability import LEVELS

ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR"}


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; one token per line. Lines refused are
    counted in `refused`, so a flood is reported, never silent."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float | None = None
    refused: int = 0

    def take(self, now: float, count: int = 1) -> int:
        """How many of `count` lines may pass now (the rest are refused and counted)."""
        if self.last is None:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        allowed = min(count, int(self.tokens))
        self.tokens -= allowed
        self.refused += count - allowed
        return allowed


def level_name(value: str) -> str:
    """A level as stored (`warn` -> WARNING); raises ValueError naming the choices."""
    name = ALIASES.get(value.strip().upper(), value.strip().upper())
    if name not in LEVELS:
        raise ValueError(f"level {value!r}: one of {', '.join(LEVELS)} (or WARN)")
    return name


def at_least(level: str, minimum: str | None) -> bool:
    return minimum is None or LEVELS.index(level) >= LEVELS.index(minimum)


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `2h`, `1d` as seconds; raises ValueError saying what is accepted."""
    found = DURATION.match(text or "")
    if not found:
        raise ValueError(f"duration {text!r}: a number with s, m, h or d (e.g. 10m)")
    return float(found.group(1)) * UNIT_SECONDS[found.group(2)]
