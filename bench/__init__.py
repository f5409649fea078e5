"""Benchmarks: forwarding cost of Parley's call server against Janus VideoRoom."""
