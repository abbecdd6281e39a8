"""The named pre-trade rules of Feasibility: each a pure function of one `OrderCheck`.

A rule returns None when the order may go, or the reason it may not, in words an operator can
act on. Feasibility gathers the facts (switches, breaker, ledger, account, calendar, limiter) into
an `OrderCheck` first, so every rule is a plain function of values: testable alone and
explainable in the audit trail. `RULES` lists them in the order they are checked; the broker rate
limit is last because taking a slot is the only effect of a check, and a refused order must not
spend one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tradeos_lab.contracts import Side
from tradeos_lab.tiers.flags import BreakerState, Decision, RateDecision


@dataclass(frozen=True)
class OrderCheck:
    """Everything the rules judge one sized order by. Money is in the account's currency,
    quantities are signed positions (positive long), times are epoch seconds."""

    strategy: str
    symbol: str
    side: Side
    quantity: float
    price: float
    now: float
    #: Whether the order shrinks both the strategy's and the account's position (from the ledger).
    reduces: bool
    kill: Decision
    breaker: BreakerState
    equity: float
    day_start_equity: float
    max_daily_loss_pct: float
    #: The account's net position in the symbol before this order.
    position: float
    max_position_pct: float
    #: Gross market value of the account's positions in every other symbol.
    other_exposure: float
    max_leverage: float
    max_order_notional: float
    #: When the strategy last went flat in this symbol (None: never).
    last_exit_at: float | None
    exit_cooldown_s: float
    #: Whether the symbol's market is open now (crypto: always).
    market_open: bool
    #: The broker rate limiter's answer; None until every other rule has passed.
    rate: RateDecision | None = None
    #: Symbols other than this one the account holds a position in, and the profile's limit
    #: on positions open at once (0: no limit).
    open_positions: int = 0
    max_open_positions: int = 0

    @property
    def notional(self) -> float:
        return self.quantity * self.price

    @property
    def position_after(self) -> float:
        signed = self.quantity if self.side is Side.BUY else -self.quantity
        return self.position + signed


Rule = Callable[[OrderCheck], str | None]

#: Relative slack on the limits: an order sized exactly at a limit must not fail on float error.
REL_TOL: Final = 1e-9


#: A position this small is float dust (a round trip sized at two equities an ulp apart), flat.
DUST: Final = 1e-9


def _above(value: float, limit: float) -> bool:
    return value > limit * (1 + REL_TOL)


def kill_switch(c: OrderCheck) -> str | None:
    """Every switch over the order (global, strategy, symbol; HALTED, REDUCING), fail-closed."""
    return None if c.kill.allowed else f"kill switch: {c.kill.reason}"


def circuit_breaker(c: OrderCheck) -> str | None:
    """No new order while the broker's circuit is open (it has been failing)."""
    if c.breaker is BreakerState.OPEN:
        return (
            "broker circuit breaker is open after repeated failures; orders resume after it closes"
        )
    return None


def max_daily_loss(c: OrderCheck) -> str | None:
    """After losing the profile's daily limit, only exposure-reducing orders until the day ends."""
    if c.reduces or c.day_start_equity <= 0:
        return None
    loss_pct = (c.day_start_equity - c.equity) / c.day_start_equity * 100
    if loss_pct >= c.max_daily_loss_pct:
        return (
            f"daily loss {loss_pct:.2f}% of start-of-day equity {c.day_start_equity:,.2f} reached "
            f"the limit of {c.max_daily_loss_pct:g}%: only reducing orders until tomorrow (UTC)"
        )
    return None


def position_limit(c: OrderCheck) -> str | None:
    """The position in one symbol stays within the profile's share of equity."""
    if c.reduces:
        return None
    value = abs(c.position_after) * c.price
    limit = c.max_position_pct / 100 * c.equity
    if _above(value, limit):
        return (
            f"position in {c.symbol} would be {value:,.2f} ({c.position_after:+g}), above "
            f"{c.max_position_pct:g}% of equity ({limit:,.2f})"
        )
    return None


def open_positions(c: OrderCheck) -> str | None:
    """An order that opens a position in a symbol the account is flat in waits while the
    profile's number of open positions is reached (adding to or closing one never does)."""
    if c.reduces or c.max_open_positions <= 0 or abs(c.position) > DUST:
        return None
    if abs(c.position_after) > DUST and c.open_positions >= c.max_open_positions:
        return (
            f"{c.open_positions} positions are open, the profile's maximum is "
            f"{c.max_open_positions}: no new position in {c.symbol}"
        )
    return None


def gross_exposure(c: OrderCheck) -> str | None:
    """Gross exposure across symbols stays within the profile's leverage of equity."""
    if c.reduces:
        return None
    gross = c.other_exposure + abs(c.position_after) * c.price
    limit = c.max_leverage * c.equity
    if _above(gross, limit):
        return (
            f"gross exposure would be {gross:,.2f}, above {c.max_leverage:g}x equity ({limit:,.2f})"
        )
    return None


def order_notional(c: OrderCheck) -> str | None:
    """No single order above the configured notional (a guard against a runaway size)."""
    if _above(c.notional, c.max_order_notional):
        return f"order notional {c.notional:,.2f} is above the maximum {c.max_order_notional:,.2f}"
    return None


def exit_cooldown(c: OrderCheck) -> str | None:
    """After a strategy goes flat in a symbol, it waits before opening again (no churn)."""
    if c.reduces or c.last_exit_at is None or c.exit_cooldown_s <= 0:
        return None  # no cooldown: an exit recorded since `now` was read holds nothing back
    waited = c.now - c.last_exit_at
    if waited < c.exit_cooldown_s:
        return (
            f"{c.strategy} exited {c.symbol} {waited:.1f} s ago; cooldown is "
            f"{c.exit_cooldown_s:g} s"
        )
    return None


def market_hours(c: OrderCheck) -> str | None:
    """Equities trade only while their exchange is open (crypto trades around the clock)."""
    return None if c.market_open else f"the market for {c.symbol} is closed now"


def rate_limit(c: OrderCheck) -> str | None:
    """The broker's request budget, shared by every process (the flags tier's limiter)."""
    if c.rate is None or c.rate.allowed:
        return None
    return f"broker rate limit exhausted; retry in {c.rate.retry_after_seconds:.3f} s"


#: The rules in the order Feasibility checks them; an intent lists the names it passed.
RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("kill_switch", kill_switch),
    ("circuit_breaker", circuit_breaker),
    ("max_daily_loss", max_daily_loss),
    ("position_limit", position_limit),
    ("open_positions", open_positions),
    ("gross_exposure", gross_exposure),
    ("order_notional", order_notional),
    ("exit_cooldown", exit_cooldown),
    ("market_hours", market_hours),
    ("rate_limit", rate_limit),
)


def first_failure(check: OrderCheck) -> tuple[str, str] | None:
    """(rule name, reason) of the first rule the order fails, or None when it passes them all."""
    for name, rule in RULES:
        reason = rule(check)
        if reason is not None:
            return name, reason
    return None
