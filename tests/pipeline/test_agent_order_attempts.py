"""The agent counts Execution's order attempts from `orders`: through the real Execution on the
runner, every attempt (an order filled, one the paper broker rejected, one the kill switch
refused) is one order the agent counts and one audit entry the audit trail keeps, fills a later
bar brings are none, and a restarted agent that reads the kept entries counts each once more
at most."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tradeos_lab.contracts import Bar, Intent, Message, new_message
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import Service, ServiceContext
from tradeos_lab.pipeline.services.agent import (
    EXECUTION,
    MAX_WINDOW_S,
    ORDER_ATTEMPTS,
    Agent,
    attempt_key,
)
from tradeos_lab.pipeline.services.audit_trail import AuditTrail
from tradeos_lab.pipeline.services.execution import Execution
from tradeos_lab.settings import Settings


def _bar(lab: Lab, ts: datetime, volume: float) -> Message:
    """A 1m BTC-USD bar in the cache (as Ingestion leaves it) and its market_data message."""
    values = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": volume}
    lab.cache.append_bar("BTC-USD", "1m", {**values, "ts": ts})
    bar = Bar(symbol="BTC-USD", timeframe="1m", ts=ts, source="synthetic", **values)  # type: ignore[arg-type]
    return new_message(bar, producer="ingestion")


def _intent(quantity: float, **extra: object) -> Message:
    values: dict[str, object] = {
        "symbol": "BTC-USD",
        "side": "buy",
        "quantity": quantity,
        "order_type": "market",
        "time_in_force": "gtc",
        "strategy": "manual",
        "reduce_only": False,
        "checks_passed": ["kill_switch"],
        **extra,
    }
    return new_message(Intent(**values), producer="feasibility")  # type: ignore[arg-type]


def _drain(service: type[Service], ctx: ServiceContext) -> Service:
    runner = ServiceRunner(service, ctx)
    try:
        runner.drain()
    finally:
        runner.close()
    return runner.service


def test_every_order_attempt_is_counted_once_from_orders_as_the_audit_trail_keeps_it(
    pipeline_lab: Lab, pipeline_settings: Settings
) -> None:
    lab = pipeline_lab
    ctx = ServiceContext(lab=lab, settings=pipeline_settings, instance="t")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    lab.bus.publish(Stream.MARKET_DATA, _bar(lab, start, volume=1.0))
    lab.bus.publish(Stream.INTENTS, _intent(0.5))  # filled at once
    lab.bus.publish(Stream.INTENTS, _intent(2.5))  # partly filled; the next bars fill the rest
    lab.bus.publish(Stream.INTENTS, _intent(1.0, order_type="stop", stop_price=90.0))  # rejected
    _drain(Execution, ctx)
    lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    lab.bus.publish(Stream.INTENTS, _intent(1.0))  # refused by the kill switch
    _drain(Execution, ctx)
    lab.kill_switches.clear("global", actor="user:test", reason="drill over")
    for minute in (1, 2):
        lab.bus.publish(Stream.MARKET_DATA, _bar(lab, start + timedelta(minutes=minute), 5.0))
        _drain(Execution, ctx)
    _drain(AuditTrail, ctx)

    kept = [
        e
        for e in lab.records.audit_since(start - timedelta(hours=1), actions=ORDER_ATTEMPTS)
        if e.producer == EXECUTION
    ]
    attempts = {attempt_key(e.action, e.target.removeprefix("order:")) for e in kept}
    assert len(kept) == len(attempts) == 4  # one entry per attempt, each order once
    assert len(lab.bus.redis.xrange(lab.keys.stream(Stream.ORDERS))) > 4  # and later reports

    agent = _drain(Agent, ctx)
    assert isinstance(agent, Agent)
    now = ctx.clock()
    assert agent.order_attempts.count(now, MAX_WINDOW_S) == 4

    # A restarted agent reads the kept entries, then the same orders again: nothing is new.
    restarted = Agent(ctx)
    orders = [
        lab.bus.decode(Stream.ORDERS, fields)
        for _, fields in lab.bus.redis.xrange(lab.keys.stream(Stream.ORDERS))
    ]
    restarted.handle_batch(orders)
    assert restarted.order_attempts.count(now, MAX_WINDOW_S) == 4
