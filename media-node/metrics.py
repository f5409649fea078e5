"""Prometheus metrics of the call server.

Counters are incremented in batches from the hot path's plain-int counters by ``Metrics.flush``
(called every second) so a forwarded packet costs integer additions, not metric-library calls. The
latency histogram is observed once per incoming packet (not per subscriber).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FORWARDED_PACKETS = Counter("parley_media_forwarded_packets_total",
                            "RTP packets sent to subscribers", ["kind"])
FORWARDED_BYTES = Counter("parley_media_forwarded_bytes_total",
                          "RTP payload and header bytes sent to subscribers", ["kind"])
RECEIVED_PACKETS = Counter("parley_media_received_packets_total",
                           "RTP packets received from publishers", ["kind"])
DROPPED_PACKETS = Counter("parley_media_dropped_packets_total",
                          "packets not sent to a subscriber that fell behind", ["kind"])
KEYFRAME_REQUESTS = Counter("parley_media_keyframe_requests_total",
                            "PLI/FIR sent upstream to publishers (after rate limiting)")
KEYFRAME_REQUESTS_SUPPRESSED = Counter("parley_media_keyframe_requests_suppressed_total",
                                       "PLI/FIR from subscribers absorbed by the rate limiter")
NACKS = Counter("parley_media_nacks_total", "NACKed sequence numbers", ["direction"])
RETRANSMISSIONS = Counter("parley_media_retransmissions_total",
                          "packets resent to subscribers from the history")
LAYER_SWITCHES = Counter("parley_media_layer_switches_total",
                         "simulcast layer changes chosen for subscribers", ["direction"])
PAUSED_LAYERS = Gauge("parley_media_paused_layers",
                      "simulcast layers paused at their publisher because nobody receives them")
BWE_PROBES = Counter("parley_media_bwe_probes_total",
                     "Raises tried on padding first (media-node/bwe.py), by result", ["result"])
BWE_PROBE_PADDING = Counter("parley_media_bwe_probe_padding_bytes_total",
                            "padding sent in probes (RTX copies of packets just sent)")
TRANSCODE_DECISIONS = Counter("parley_media_transcode_decisions_total",
                              "legs routed to a transcoded rung (reason transcoded)", ["rung"])
TRANSCODED_LEGS = Gauge("parley_media_transcoded_legs",
                        "legs receiving (or switching to) a transcoded rung")
TRANSCODERS = Gauge("parley_media_transcoders",
                    "source track layers routed to a meeting transcoder")
TRANSCODER_FALLBACKS = Counter("parley_media_transcoder_fallbacks_total",
                               "legs moved off the output of a transcoder that was lost "
                               "(to: the lowest layer, or paused for a subscriber that "
                               "cannot decode the original)", ["to"])
TRANSCODERS_LOST = Counter("parley_media_transcoders_lost_total",
                           "routes ended because their transcoder went silent")
SUBSCRIPTIONS = Gauge("parley_media_subscriptions", "forwarding legs (subscriber x track)")
MEETINGS = Gauge("parley_media_meetings", "meetings on this node")
PARTICIPANTS = Gauge("parley_media_participants", "participants on this node")
DRAINING = Gauge("parley_media_draining", "1 while the node drains")
FORWARD_LATENCY = Histogram(
    "parley_media_forward_latency_seconds",
    "time from an RTP packet reaching the call server to its last copy leaving (one packet in "
    "16 of each track)",
    buckets=(25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 0.1),
)
