"""Counterfactuals: what recent trading would have done under new weights or a new profile.

`weight_replay`: each closed trade of the last N days (TCA's signal horizons at the scoring
horizon) with its P&L scaled by its strategy's new weight over its old one. The ensemble blends
strategies linearly and Feasibility sizes linearly in the blended strength, so a trade's size,
and so its P&L, moves with its strategy's weight; trades the new weights would have opened or
suppressed (a blend changing sign) are outside this replay.

`profile_replay`: yesterday's intents judged again under a candidate policy profile, in order,
with the positions they would have built: an intent below the candidate's minimum confidence or
opening a position beyond its maximum count is denied; an opening size scales with the
candidate's largest position times its risk per trade against the profile it was sized under,
then is cut to the candidate's position limit and leverage at the intent's fill price. Reducing
intents pass unchanged (every profile lets exposure shrink).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
from sqlalchemy import select

from tradeos_lab.errors import ValidationError

if TYPE_CHECKING:
    from tradeos_lab.stores.records import (
        PolicyProfile,
        PolicyProfileVersion,
        RecordsStore,
        SignalHorizon,
    )

#: The horizon (bars) trades are scored at, as the TCA Monitor scores win rate and IC.
SCORE_HORIZON_BARS: Final = 5
_REL_TOL: Final = 1e-9


def weight_replay(
    horizons: Iterable[SignalHorizon],
    before: Mapping[str, float],
    after: Mapping[str, float],
) -> pd.DataFrame:
    """One row per closed trade: its actual P&L and the P&L under `after` (weights on the
    cache's mean-1 scale; a missing strategy weighs 1.0, as in the modifier)."""
    rows = []
    for h in horizons:
        if h.status != "done" or h.pnl is None:
            continue
        old = float(before.get(h.strategy, 1.0))
        new = float(after.get(h.strategy, 1.0))
        rows.append(
            {
                "signal_at": h.signal_at,
                "strategy": h.strategy,
                "symbol": h.symbol,
                "pnl": float(h.pnl),
                "scale": new / old,
                "counterfactual_pnl": float(h.pnl) * new / old,
            }
        )
    columns = ["signal_at", "strategy", "symbol", "pnl", "scale", "counterfactual_pnl"]
    return pd.DataFrame(rows, columns=columns)


def daily(replay: pd.DataFrame) -> pd.DataFrame:
    """Actual and counterfactual P&L per UTC day."""
    if replay.empty:
        return pd.DataFrame(columns=["pnl", "counterfactual_pnl"])
    day = pd.to_datetime(replay["signal_at"], utc=True).dt.floor("D")
    return replay.groupby(day)[["pnl", "counterfactual_pnl"]].sum().rename_axis("day")


def recent_trades(records: RecordsStore, *, days: float, now: datetime) -> list[SignalHorizon]:
    """Closed trades at the scoring horizon whose signal came in the last `days` days."""
    from tradeos_lab.stores.records import SignalHorizon

    since = now - timedelta(days=days)
    stmt = (
        select(SignalHorizon)
        .where(
            SignalHorizon.status == "done",
            SignalHorizon.horizon_bars == SCORE_HORIZON_BARS,
            SignalHorizon.signal_at >= since,
        )
        .order_by(SignalHorizon.signal_at, SignalHorizon.signal_id)
    )
    with records.session() as session:
        return list(session.scalars(stmt))


# ---- policy profile counterfactual ----------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The profile limits a replay sizes and judges by."""

    max_position_pct: float
    max_leverage: float
    risk_per_trade_pct: float
    max_open_positions: int
    min_signal_confidence: float

    @classmethod
    def of(cls, profile: PolicyProfile | PolicyProfileVersion) -> Limits:
        return cls(
            max_position_pct=profile.max_position_pct,
            max_leverage=profile.max_leverage,
            risk_per_trade_pct=profile.risk_per_trade_pct,
            max_open_positions=profile.max_open_positions,
            min_signal_confidence=profile.min_signal_confidence,
        )


@dataclass(frozen=True)
class ReplayIntent:
    """An intent as it was cleared, with what the replay needs beside it."""

    intent_id: str
    strategy: str
    symbol: str
    side: str
    quantity: float
    reduce_only: bool
    #: Its fill price (None: never filled; position and leverage limits cannot be judged).
    price: float | None
    confidence: float | None
    #: The limits of the profile it was sized under.
    sized_under: Limits


def profile_replay(
    intents: Iterable[ReplayIntent], candidate: Limits, *, equity: float
) -> pd.DataFrame:
    """Each intent kept, resized or denied under `candidate`, with the rule and the sizes."""
    if not equity > 0:
        raise ValidationError(f"a profile replay needs a positive equity, got {equity!r}")
    positions: dict[str, float] = {}
    prices: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for i in intents:
        sign = 1.0 if i.side == "buy" else -1.0
        held = positions.get(i.symbol, 0.0)
        verdict, rule, quantity = "kept", "", i.quantity
        if i.price is not None:
            prices[i.symbol] = i.price
        if i.reduce_only:
            rule = "reducing orders pass every profile"
        elif i.confidence is not None and i.confidence < candidate.min_signal_confidence:
            verdict, rule, quantity = "denied", "min_signal_confidence", 0.0
        elif held == 0 and _open_count(positions) >= candidate.max_open_positions:
            verdict, rule, quantity = "denied", "max_open_positions", 0.0
        else:
            base = i.sized_under
            scale = (candidate.max_position_pct * candidate.risk_per_trade_pct) / (
                base.max_position_pct * base.risk_per_trade_pct
            )
            quantity = i.quantity * scale
            rule = f"size x{scale:g} (largest position x risk per trade)"
            if i.price is not None:
                quantity, cut = _cut(
                    i,
                    held,
                    quantity,
                    candidate=candidate,
                    positions=positions,
                    prices=prices,
                    equity=equity,
                )
                rule = cut or rule
            if quantity <= 0:
                verdict, quantity = "denied", 0.0
            elif abs(quantity - i.quantity) > _REL_TOL * i.quantity:
                verdict = "resized"
        positions[i.symbol] = held + sign * quantity
        rows.append(
            {
                "intent_id": i.intent_id,
                "strategy": i.strategy,
                "symbol": i.symbol,
                "side": i.side,
                "quantity": i.quantity,
                "candidate_quantity": quantity,
                "verdict": verdict,
                "rule": rule,
            }
        )
    columns = [
        "intent_id",
        "strategy",
        "symbol",
        "side",
        "quantity",
        "candidate_quantity",
        "verdict",
        "rule",
    ]
    return pd.DataFrame(rows, columns=columns)


def _open_count(positions: Mapping[str, float]) -> int:
    return sum(1 for q in positions.values() if q != 0)


def _cut(
    i: ReplayIntent,
    held: float,
    quantity: float,
    *,
    candidate: Limits,
    positions: Mapping[str, float],
    prices: Mapping[str, float],
    equity: float,
) -> tuple[float, str]:
    """The quantity cut to the candidate's position limit and leverage, and the rule that cut."""
    assert i.price is not None
    price = i.price
    cut = ""
    room = candidate.max_position_pct / 100 * equity / price - abs(held)
    if quantity > room:
        quantity, cut = max(room, 0.0), "position_limit"
    others = sum(abs(q) * prices.get(s, 0.0) for s, q in positions.items() if s != i.symbol)
    gross_room = (candidate.max_leverage * equity - others) / price - abs(held)
    if quantity > gross_room:
        quantity, cut = max(gross_room, 0.0), "gross_exposure"
    return quantity, cut


def intents_to_replay(records: RecordsStore, start: datetime, end: datetime) -> list[ReplayIntent]:
    """The intents kept in [start, end) with their fill price, their signal's confidence and
    the limits of the profile they were sized under (its live values when that version is no
    longer known)."""
    from tradeos_lab.stores.records import Order

    kept = records.intents_between(start, end)
    ids = [k.message_id for k in kept]
    prices: dict[str | None, float | None] = {}
    if ids:
        stmt = select(Order.intent_id, Order.avg_price).where(Order.intent_id.in_(ids))
        with records.session() as session:
            # A Result has keys(), so dict() would read it as a mapping: pair the rows here.
            prices = {row[0]: row[1] for row in session.execute(stmt)}
    profiles = {p.name: Limits.of(p) for p in records.profiles()}
    out = []
    for k in kept:
        payload = k.payload
        name = str(payload.get("policy_profile") or "Balanced").split("@", 1)[0]
        sized_under = profiles.get(name) or profiles["Balanced"]
        signal = records.signal(payload["signal_id"]) if payload.get("signal_id") else None
        confidence = signal.payload.get("confidence") if signal is not None else None
        price = prices.get(k.message_id)
        out.append(
            ReplayIntent(
                intent_id=k.message_id,
                strategy=k.strategy,
                symbol=k.symbol,
                side=k.side,
                quantity=k.quantity,
                reduce_only=bool(payload.get("reduce_only")),
                price=None if price is None else float(price),
                confidence=None if confidence is None else float(confidence),
                sized_under=sized_under,
            )
        )
    return out
