"""The agent's halting rules: what each watches, its limits, and the pure judgement of each.

Each rule is configured per policy profile (`PolicyProfile.agent_rules`, JSON; absent fields take
the defaults below) and judged as a plain function of the figures the agent gathered, so a rule is
testable alone and the figures that triggered it go into the audit entry unchanged. A `Verdict`
names the switch the rule wants engaged (scope, target, mode, expiry) or, untriggered, the same
switch to release.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from tradeos_lab.errors import ValidationError
from tradeos_lab.tiers.flags import KillMode, KillScope


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    #: How long an engaged switch lasts by itself (None: until the agent releases it).
    expiry_s: float | None = Field(default=None, gt=0)


class DrawdownRule(_Rule):
    """Equity peak-to-now loss over a window; the profile's `max_drawdown_pct` when no limit."""

    max_drawdown_pct: float | None = Field(default=None, gt=0, le=100)
    window_s: float = Field(default=86_400.0, gt=0)
    expiry_s: float | None = Field(default=3_600.0, gt=0)


class ExecutionErrorRule(_Rule):
    """Failed order submissions over those attempted in a window."""

    max_error_rate: float = Field(default=0.5, gt=0, le=1)
    min_orders: int = Field(default=5, ge=1)
    window_s: float = Field(default=900.0, gt=0)
    expiry_s: float | None = Field(default=1_800.0, gt=0)


class StaleDataRule(_Rule):
    """A symbol whose price has not moved on for this long (on the agent's clock) is halted."""

    max_age_s: float = Field(default=600.0, gt=0)


class CircuitBreakerRule(_Rule):
    """Circuit-breaker trips of the broker in a window."""

    max_trips: int = Field(default=3, ge=1)
    window_s: float = Field(default=3_600.0, gt=0)
    expiry_s: float | None = Field(default=3_600.0, gt=0)


class ReconciliationRule(_Rule):
    """Reconciliation mismatches in a window: the account goes REDUCING."""

    max_mismatches: int = Field(default=3, ge=1)
    window_s: float = Field(default=3_600.0, gt=0)


class LearningRule(BaseModel):
    """The learning loop's guardrails (see `tradeos_lab.agent.bandit`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_closed_trades: int = Field(default=20, ge=1)
    max_shift: float = Field(default=0.1, gt=0, le=1)
    weight_floor: float = Field(default=0.05, ge=0, lt=1)
    lookback_days: float = Field(default=7.0, gt=0)


class AgentRules(BaseModel):
    """Every agent rule of one policy profile, and whether its config changes need approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drawdown: DrawdownRule = DrawdownRule()
    execution_errors: ExecutionErrorRule = ExecutionErrorRule()
    stale_data: StaleDataRule = StaleDataRule()
    circuit_breaker: CircuitBreakerRule = CircuitBreakerRule()
    reconciliation: ReconciliationRule = ReconciliationRule()
    learning: LearningRule = LearningRule()
    #: Config the agent proposes waits for an operator's approval.
    require_approval: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> AgentRules:
        """The rules stored in a profile (None: the defaults); bad ones raise `ValidationError`."""
        if raw is None:
            return cls()
        try:
            return cls.model_validate(raw)
        except PydanticValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ValidationError(
                f"agent rules of the policy profile are invalid: {problems}"
            ) from None


@dataclass(frozen=True)
class Verdict:
    """One rule's judgement over one switch: engage it (`triggered`) or release it."""

    rule: str
    triggered: bool
    scope: KillScope
    target: str
    mode: KillMode
    expiry_s: float | None
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


class EventWindow:
    """Events (epoch s, key: the message id, or what else names the event once) kept for at
    most `span_s`, each counted once however often it is seen (a redelivery, or the records'
    copy of a message the bus also brings).

    Kept in time order, so a count is a binary search however many events the span holds (the
    agent counts on every batch, and a busy week holds an order attempt per bar)."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._events: list[tuple[float, str]] = []
        self._ids: set[str] = set()

    def add(self, ts: float, key: str) -> bool:
        """Note one event; False when it was noted already."""
        if key in self._ids:
            return False
        self._ids.add(key)
        bisect.insort(self._events, (ts, key))
        return True

    def count(self, now: float, window_s: float) -> int:
        expired = bisect.bisect_left(self._events, (now - self.span_s,))
        if expired:
            self._ids.difference_update(m for _, m in self._events[:expired])
            del self._events[:expired]
        return len(self._events) - bisect.bisect_left(self._events, (now - window_s,))


def drawdown(
    rule: DrawdownRule,
    profile_max_drawdown_pct: float,
    equity: Iterable[tuple[float, float]],
    now: float,
) -> Verdict | None:
    """Loss from the highest equity in the window to the latest, against the limit (None: no
    equity seen in the window)."""
    limit = rule.max_drawdown_pct or profile_max_drawdown_pct
    inside = [(t, v) for t, v in equity if t >= now - rule.window_s]
    if not inside:
        return None
    peak = max(v for _, v in inside)
    latest = inside[-1][1]
    pct = 0.0 if peak <= 0 else (peak - latest) / peak * 100
    figures = {
        "peak_equity": peak,
        "equity": latest,
        "drawdown_pct": round(pct, 6),
        "limit_pct": limit,
        "window_s": rule.window_s,
    }
    triggered = pct >= limit
    reason = (
        f"drawdown {pct:.2f}% from {peak:,.2f} to {latest:,.2f} over {rule.window_s:g} s "
        f"{'reached' if triggered else 'is within'} the limit of {limit:g}%"
    )
    return Verdict(
        "drawdown",
        triggered,
        KillScope.GLOBAL,
        "*",
        KillMode.HALTED,
        rule.expiry_s,
        reason,
        figures,
    )


def execution_errors(rule: ExecutionErrorRule, errors: int, attempts: int) -> Verdict:
    """Failed submissions over attempted ones in the window; too few attempts to judge
    reads as untriggered."""
    figures = {
        "errors": errors,
        "attempts": attempts,
        "limit_rate": rule.max_error_rate,
        "min_orders": rule.min_orders,
        "window_s": rule.window_s,
    }
    if attempts < rule.min_orders:
        reason = (
            f"{attempts} order(s) attempted in {rule.window_s:g} s, fewer than {rule.min_orders}"
        )
        return Verdict(
            "execution_errors",
            False,
            KillScope.GLOBAL,
            "*",
            KillMode.HALTED,
            rule.expiry_s,
            reason,
            figures,
        )
    rate = errors / attempts
    figures["error_rate"] = round(rate, 6)
    triggered = rate >= rule.max_error_rate
    reason = (
        f"{errors} of {attempts} orders failed in {rule.window_s:g} s ({rate:.0%}), "
        f"{'at or above' if triggered else 'below'} the limit of {rule.max_error_rate:.0%}"
    )
    return Verdict(
        "execution_errors",
        triggered,
        KillScope.GLOBAL,
        "*",
        KillMode.HALTED,
        rule.expiry_s,
        reason,
        figures,
    )


def stale_data(rule: StaleDataRule, symbol: str, unchanged_s: float) -> Verdict:
    """A symbol whose price has not moved on for `unchanged_s` seconds."""
    triggered = unchanged_s >= rule.max_age_s
    reason = (
        f"no new price for {symbol} in {unchanged_s:.0f} s "
        f"({'at or beyond' if triggered else 'within'} the limit of {rule.max_age_s:g} s)"
    )
    figures = {"symbol": symbol, "unchanged_s": round(unchanged_s, 3), "limit_s": rule.max_age_s}
    return Verdict(
        "stale_data",
        triggered,
        KillScope.SYMBOL,
        symbol,
        KillMode.HALTED,
        rule.expiry_s,
        reason,
        figures,
    )


def _global_count(
    rule: str,
    count: int,
    *,
    what: str,
    key: str,
    limit: int,
    window_s: float,
    mode: KillMode,
    expiry_s: float | None,
) -> Verdict:
    """A count of events in a window against its limit, over the account's switch."""
    triggered = count >= limit
    reason = (
        f"{count} {what} in {window_s:g} s "
        f"({'at or above' if triggered else 'below'} the limit of {limit})"
    )
    figures = {key: count, "limit": limit, "window_s": window_s}
    return Verdict(rule, triggered, KillScope.GLOBAL, "*", mode, expiry_s, reason, figures)


def circuit_breaker(rule: CircuitBreakerRule, trips: int) -> Verdict:
    """Broker circuit-breaker trips in the window."""
    return _global_count(
        "circuit_breaker",
        trips,
        what="circuit-breaker trip(s)",
        key="trips",
        limit=rule.max_trips,
        window_s=rule.window_s,
        mode=KillMode.HALTED,
        expiry_s=rule.expiry_s,
    )


def reconciliation(rule: ReconciliationRule, mismatches: int) -> Verdict:
    """Reconciliation mismatches in the window: the account may only reduce."""
    return _global_count(
        "reconciliation",
        mismatches,
        what="reconciliation mismatch(es)",
        key="mismatches",
        limit=rule.max_mismatches,
        window_s=rule.window_s,
        mode=KillMode.REDUCING,
        expiry_s=rule.expiry_s,
    )
