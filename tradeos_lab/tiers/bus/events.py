"""The risk events the bus raises about itself (dead letters, trimmed entries), on `risk_events`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tradeos_lab import contracts
from tradeos_lab.contracts import Message
from tradeos_lab.keys import Stream


def printable(text: str) -> str:
    """Text safe for a contract's text field: control characters (bar newline) become '?'."""
    return "".join(ch if ch.isprintable() or ch == "\n" else "?" for ch in text)


def stream_risk_event(
    kind: contracts.RiskKind,
    stream: Stream,
    detail: str,
    data: dict[str, Any],
    *,
    producer: str,
) -> Message:
    """A critical risk event scoped to `stream` (`ContractError` when a field is out of bounds)."""
    payload = contracts.RiskEvent(
        kind=kind,
        severity=contracts.Severity.CRITICAL,
        scope=f"stream:{stream.value}",
        detail=printable(detail),
        data=data,
        ts=datetime.now(UTC),
    )
    return contracts.new_message(payload, producer=producer)
