"""Prometheus metrics of the signaling service (exposed on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTED = Gauge("parley_signaling_connected_clients", "Authenticated WebSocket clients held")
CALLS = Counter("parley_signaling_calls_total",
                "1:1 calls entering a state (ringing, active) or ending (by reason)", ["state"])
ACTIVE_CALLS = Gauge("parley_signaling_active_calls",
                     "1:1 calls by current state, counted on the replica that moved them there "
                     "(sum over replicas)", ["state"])
MESSAGES = Counter("parley_signaling_messages_total", "Client messages received, by type",
                   ["type"])
ERRORS = Counter("parley_signaling_errors_total", "Errors sent to clients, by code", ["code"])
ROOMS_JOINED = Counter("parley_signaling_room_joins_total", "Room joins by outcome", ["outcome"])
