"""Structured JSON logs: service name, timestamp, correlation id and severity on every line.

Secrets registered in `tradeos_lab.secrets` are scrubbed from every field of a line (the message,
its arguments, extra fields at any depth, an exception) before the line is encoded: `json.dumps`
escapes quotes, backslashes and non-ASCII characters, so a secret scrubbed only from the encoded
line could pass in its escaped form. The scrub lives in the stdlib formatter, not in a structlog
processor, because every module and third-party library here logs through stdlib `logging`; one
formatter covers them all without a second logging pipeline.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tradeos_lab.secrets import scrub, scrub_fields

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tradeos_correlation_id", default=None
)
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


@contextlib.contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    """Tag every log line written inside the block with `correlation_id`."""
    token = _correlation_id.set(correlation_id)
    try:
        yield
    finally:
        _correlation_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra record attributes become fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "service": getattr(record, "service", self.service),
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or _correlation_id.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(scrub_fields(entry))


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, still scrubbed."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send the `tradeos_lab` loggers to stderr in the chosen format (idempotent)."""
    root = logging.getLogger("tradeos_lab")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    handler.set_name("tradeos")
    root.handlers = [h for h in root.handlers if h.get_name() != "tradeos"] + [handler]
    root.setLevel(level)
    root.propagate = False
