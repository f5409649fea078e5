"""Signaling service: WebSocket sessions, presence, calls, rooms and the web client."""
