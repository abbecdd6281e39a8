"""What the apps' tests (and their benchmark) share: a fill as Execution publishes one, an
intent parked for approval as Feasibility parks one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tradeos_lab.contracts import Fill, Message, ModifiedSignal, new_message, new_message_id
from tradeos_lab.keys import Stream

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab


def fill_message(execution_id: str, *, symbol: str = "BTC-USD", price: float = 101.5) -> Message:
    """A fill of 2 at `price`, as the paper broker reports one."""
    return new_message(
        Fill(
            client_order_id=f"tl-{execution_id}",
            broker_order_id=f"paper-{execution_id}",
            execution_id=execution_id,
            symbol=symbol,
            side="buy",  # type: ignore[arg-type]
            quantity=2,
            price=price,
            fee=0.1,
            fee_currency="USD",
            liquidity="taker",  # type: ignore[arg-type]
            ts=datetime.now(UTC),
        ),
        producer="execution",
    )


def park_intent(lab: Lab, *, strategy: str = "sma_cross", threshold: float = 1_000.0) -> str:
    """An intent parked for approval the way the pipeline parks one: the active profile given an
    approval threshold below the order, a long signal handed to Feasibility; its intent id."""
    from tradeos_lab.pipeline.runner import ServiceRunner
    from tradeos_lab.pipeline.service import ServiceContext
    from tradeos_lab.pipeline.services.feasibility import Feasibility

    if lab.records.profile(active_profile(lab)).approval_notional != threshold:
        set_approval_threshold(lab, threshold)
    lab.cache.set_price("BTC-USD", 50_000.0)
    before = {p.intent_id for p in lab.flags.approvals.pending()}
    signal = new_message(
        ModifiedSignal(
            raw_signal_id=new_message_id(),
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            ts=datetime.now(UTC),
            direction="long",  # type: ignore[arg-type]
            raw_strength=0.5,
            adjusted_strength=0.5,
            confidence=0.9,
            modifiers=[],
        ),
        producer="signal_modifier",
    )
    lab.bus.publish(Stream.SIGNALS_MODIFIED, signal)
    ServiceRunner(Feasibility, ServiceContext(lab, lab.settings, "apps-test")).drain()
    (parked,) = [p for p in lab.flags.approvals.pending() if p.intent_id not in before]
    return parked.intent_id


def active_profile(lab: Lab) -> str:
    from tradeos_lab.pipeline.services.signal_modifier import ACTIVE_PROFILE_KEY

    return str(lab.records.get_config(ACTIVE_PROFILE_KEY, "Balanced"))


def set_approval_threshold(lab: Lab, notional: float | None, *, ttl_s: float = 300.0) -> None:
    """The active profile's approval threshold (None: off) and TTL, as a new activated version
    (the pipeline sees it within a second)."""
    profile = active_profile(lab)
    version = lab.records.save_profile_version(
        profile,
        {"approval_notional": notional, "approval_ttl_s": ttl_s},
        created_by="user:test",
        reason="orders above the threshold wait for an operator",
    )
    lab.records.activate_profile(profile, version.version, activated_by="user:test")
