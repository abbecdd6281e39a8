"""Every Redis key and stream name, built in one place.

Names are `{namespace}:{...}`; the namespace (setting `namespace`) lets several labs or test runs
share one server without touching each other. Stream names are the pipeline's stage names
(`signals.raw`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from tradeos_lab.errors import ValidationError
from tradeos_lab.symbols import Timeframe, validate_symbol

_GROUP_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Stream(StrEnum):
    """The pipeline streams, in pipeline order (market data in, audit last)."""

    MARKET_DATA = "market_data"
    NEWS_RAW = "news.raw"
    NEWS_SCORED = "news.scored"
    SIGNALS_RAW = "signals.raw"
    SIGNALS_MODIFIED = "signals.modified"
    INTENTS = "intents"
    ORDERS = "orders"
    FILLS_RAW = "fills.raw"
    POSITIONS = "positions"
    RISK_EVENTS = "risk_events"
    AUDIT = "audit"


@dataclass(frozen=True)
class Keys:
    """Builds key and stream names under one namespace."""

    namespace: str = "tradeos"

    def _k(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # ---- bus ------------------------------------------------------------------------------
    def stream(self, stream: Stream | str) -> str:
        return self._k("stream", Stream(stream).value)

    def dead_letter(self, stream: Stream | str) -> str:
        return self._k("dlq", Stream(stream).value)

    @staticmethod
    def group(name: str) -> str:
        """A consumer-group or consumer name (not namespaced: it lives inside a stream key)."""
        if not _GROUP_NAME.fullmatch(name):
            raise ValidationError(f"bad group or consumer name {name!r}: 1-64 of [A-Za-z0-9_.:-]")
        return name

    def effect_done(self, group: str, message_id: str) -> str:
        """Marker that `group` applied the effect of `message_id` (idempotent consumers)."""
        return self._k("bus", "done", group, message_id)

    def last_ingested(self, feed: str, symbol: str, timeframe: Timeframe | str) -> str:
        """Open time of the last bar ingestion published from `feed` for a series; set in the
        MULTI of the publish, so a re-poll never publishes a bar twice."""
        return self._k(
            "bus", "ingested", feed, validate_symbol(symbol), Timeframe.parse(timeframe).value
        )

    def trim_loss_reported(self, stream: Stream | str) -> str:
        """Hash of the trim losses already reported, per group of `stream` (each reported once)."""
        return self._k("bus", "trimloss", Stream(stream).value)

    # ---- cache ----------------------------------------------------------------------------
    def price(self, symbol: str) -> str:
        return self._k("price", validate_symbol(symbol))

    def account(self) -> str:
        return self._k("account")

    def positions(self) -> str:
        return self._k("positions")

    def hero_signals(self) -> str:
        return self._k("hero_signals")

    def policy_profile(self) -> str:
        return self._k("policy", "active")

    def tracker(self, name: str) -> str:
        return self._k("tracker", name)

    def agent_equity(self) -> str:
        """The agent's equity samples (a sorted set by time), so a restart keeps its window."""
        return self._k("agent", "equity")

    def bars(self, symbol: str, timeframe: Timeframe | str) -> str:
        return self._k("bars", validate_symbol(symbol), Timeframe.parse(timeframe).value)

    def indicators(self, symbol: str, timeframe: Timeframe | str) -> str:
        return self._k("indicators", validate_symbol(symbol), Timeframe.parse(timeframe).value)

    def indicator_state(self, symbol: str, timeframe: Timeframe | str) -> str:
        """The incremental indicator states behind `indicators`, so a restart resumes them."""
        return self._k("indstate", validate_symbol(symbol), Timeframe.parse(timeframe).value)

    def live_strategy(
        self, group: str, strategy: str, symbol: str, timeframe: Timeframe | str
    ) -> str:
        """A Signal Engine's live state of one strategy on one series, so a restart resumes."""
        return self._k(
            "live",
            Keys.group(group),
            strategy,
            validate_symbol(symbol),
            Timeframe.parse(timeframe).value,
        )

    def news_sentiment(self, symbol: str) -> str:
        """Hash of one ticker's recent scored news (article id -> time and score), from which
        its decayed sentiment is computed; written by the sentiment scorer."""
        return self._k("news", "sentiment", validate_symbol(symbol))

    def watchlist(self) -> str:
        return self._k("watchlist")

    def candidates(self) -> str:
        return self._k("candidates", "ranked")

    def subscriptions(self) -> str:
        return self._k("subscriptions")

    def backfill(self, job: str) -> str:
        """Checkpoint of one backfill job (plan, per-symbol cursor, finished symbols)."""
        return self._k("backfill", Keys.group(job))

    def backfill_lock(self, job: str) -> str:
        """Lease held by the one process running a backfill job."""
        return self._k("backfill_lock", Keys.group(job))

    def backfill_pattern(self) -> str:
        return self._k("backfill", "*")

    # ---- flags ----------------------------------------------------------------------------

    def kill_switches(self) -> str:
        """The one hash holding every kill switch plus the `armed` sentinel (see tiers.flags)."""
        return self._k("killswitches")

    def rate_limit(self, name: str) -> str:
        return self._k("ratelimit", name)

    def circuit(self, dependency: str) -> str:
        return self._k("circuit", dependency)

    def dedup(self, key: str) -> str:
        return self._k("dedup", key)

    def workers(self) -> str:
        return self._k("workers")

    def heartbeat(self, service: str, instance: str) -> str:
        return self._k("heartbeat", service, instance)

    def approvals(self) -> str:
        """Intents waiting for an operator, by intent id (one hash tag for the queue's keys)."""
        return self._k("{approvals}", "pending")

    def approval_deadlines(self) -> str:
        return self._k("{approvals}", "deadlines")

    def approvals_decided(self) -> str:
        return self._k("{approvals}", "decided")
