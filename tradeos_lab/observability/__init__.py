"""Structured logs, health endpoints and metrics shared by every long-running process."""
