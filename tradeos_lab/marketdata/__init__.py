"""Market data: three-tier bar reads, symbol subscriptions, the backfill and its monitoring.

`BarReader` answers `get_bars` from the cache, the bar store or a provider, in that order;
`SubscriptionManager` tracks which symbols and timeframes are needed; `Backfill` fills the store's
history resumably under a rate limit shared through the flags tier (`SharedLimiter`).
"""

from tradeos_lab.marketdata.backfill import (
    Backfill,
    BackfillBusy,
    BackfillCheckpoint,
    BackfillPlan,
    BackfillReport,
    SymbolResult,
    backfill_jobs,
)
from tradeos_lab.marketdata.limits import SharedLimiter
from tradeos_lab.marketdata.monitoring import bar_totals, bars_per_symbol, freshness
from tradeos_lab.marketdata.reader import BarReader
from tradeos_lab.marketdata.subscriptions import SubscriptionManager

__all__ = [
    "Backfill",
    "BackfillBusy",
    "BackfillCheckpoint",
    "BackfillPlan",
    "BackfillReport",
    "BarReader",
    "SharedLimiter",
    "SubscriptionManager",
    "SymbolResult",
    "backfill_jobs",
    "bar_totals",
    "bars_per_symbol",
    "freshness",
]
