"""The bus's Prometheus counters, labelled by stream (and group)."""

from __future__ import annotations

from prometheus_client import Counter

PUBLISHED = Counter("tradeos_bus_published", "Messages published to a stream", ["stream"])
CONSUMED = Counter(
    "tradeos_bus_consumed", "Entries delivered to a consumer group", ["stream", "group"]
)
ACKED = Counter("tradeos_bus_acked", "Entries acknowledged after handling", ["stream", "group"])
DEAD_LETTERED = Counter(
    "tradeos_bus_dead_lettered",
    "Entries moved to the dead-letter stream",
    ["stream", "group", "reason"],
)
REDELIVERED = Counter(
    "tradeos_bus_redelivered",
    "Entries delivered again (own pending drained or reclaimed)",
    ["stream", "group"],
)
TRIMMED_LOST = Counter(
    "tradeos_bus_trimmed_lost",
    "Entries trimmed before a group delivered or acked them (1 per gap when the count is unknown)",
    ["stream", "group"],
)
