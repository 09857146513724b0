"""Seeing a running server: Prometheus metrics and structured logs."""
