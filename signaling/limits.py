"""Per-connection rate limits: a token bucket per kind of message (docs/signaling.md, "Limits").

One client must not make the server do expensive work without bound: ``caps``/``media`` reach
everyone in the room, ``join`` locks and re-reads the room, ``sfu.join`` places a participant on
a call server (an HTTP call to the node, which sets up ICE and DTLS), ``sfu.answer``,
``sfu.publish`` and ``sfu.view`` are HTTP calls to the node, ``invite`` rings another user. So
each connection gets a small budget per kind that refills at a steady rate; a message over
budget is refused with ``rate_limited`` and dropped, and the session goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parley.signaling.hub import Options


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


# message type -> the budget it spends (several types may share one)
BUDGET_OF = {
    "caps": "fanout", "media": "fanout",
    "join": "join",
    "sfu.join": "sfu_join",
    "sfu.answer": "sfu_signal", "sfu.publish": "sfu_signal", "sfu.unpublish": "sfu_signal",
    "sfu.view": "sfu_view",  # its own: tile resizes must never starve answers
    "invite": "invite",
    "presence": "presence", "presence.subscribe": "presence",  # the people panel's list
}


def connection_buckets(o: Options) -> dict[str, TokenBucket]:
    """One connection's fresh budgets, sized by the replica's options."""
    return {"fanout": TokenBucket(o.fanout_rate, o.fanout_burst),
            "join": TokenBucket(o.join_rate, o.join_burst),
            "sfu_join": TokenBucket(o.sfu_join_rate, o.sfu_join_burst),
            "sfu_signal": TokenBucket(o.sfu_signal_rate, o.sfu_signal_burst),
            "sfu_view": TokenBucket(o.sfu_view_rate, o.sfu_view_burst),
            "invite": TokenBucket(o.invite_rate, o.invite_burst),
            "presence": TokenBucket(2.0, 10.0)}
