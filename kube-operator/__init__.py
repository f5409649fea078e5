"""Kubernetes operator (kopf) for Meeting and Broadcast resources."""
