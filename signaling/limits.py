"""Per-connection rate limits: a token bucket per kind of message (docs/signaling.md, "Limits").

One client must not make the server fan out without bound (``caps``/``media`` reach everyone in
the room, ``join`` locks and re-reads the room), so each connection gets a small budget that
refills at a steady rate; a message over budget is refused with ``rate_limited``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # bucket size
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else float("inf")
