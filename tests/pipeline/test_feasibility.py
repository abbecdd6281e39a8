"""Feasibility on the machine's Redis and PostgreSQL: each named rule passes a fitting order and
refuses one that breaks it, the refusal visible on `risk_events` and `audit`; intents are sized by
the policy profile, list the rules they passed and the profile version, and are kept in the
records under their bus id; kill switches of every scope and mode; no intent while the flags tier
is down."""

from __future__ import annotations

import os
import signal as posix_signal
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.contracts import (
    Audit,
    Intent,
    Message,
    ModifiedSignal,
    RiskEvent,
    new_message,
    new_message_id,
)
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.feasibility import (
    BROKER_DEPENDENCY,
    BROKER_RATE_LIMIT_KEY,
    DAY_START_EQUITY_KEY,
    MAX_ORDER_NOTIONAL_KEY,
    Feasibility,
)
from tradeos_lab.pipeline.services.rules import RULES
from tradeos_lab.settings import Settings, SharedRedisServerWarning

PRICE = 50_000.0
# A Wednesday afternoon in New York: XNYS is open; and the Saturday after it.
WEEKDAY_OPEN = datetime(2026, 12, 2, 16, 0, tzinfo=UTC).timestamp()
SATURDAY = datetime(2026, 12, 5, 16, 0, tzinfo=UTC).timestamp()


def _signal(
    *,
    strategy: str = "sma_cross",
    symbol: str = "BTC-USD",
    strength: float = 0.5,
    confidence: float = 0.9,
) -> Message:
    direction = "long" if strength > 0 else "short" if strength < 0 else "flat"
    return new_message(
        ModifiedSignal(
            raw_signal_id=new_message_id(),
            strategy=strategy,
            symbol=symbol,
            timeframe="1m",
            ts=datetime(2026, 12, 2, 15, 59, tzinfo=UTC),
            direction=direction,
            raw_strength=strength,
            adjusted_strength=strength,
            confidence=confidence,
            modifiers=[],
        ),
        producer="signal_modifier",
    )


def _run(lab: Lab, *signals: Message, now: float = WEEKDAY_OPEN) -> dict[Stream, list[Message]]:
    """Publish the signals, let Feasibility drain them, and read what it emitted on the bus
    (the kill switches' own audit entries left aside)."""
    for signal in signals:
        lab.bus.publish(Stream.SIGNALS_MODIFIED, signal)
    ctx = ServiceContext(lab, lab.settings, "feasibility-test", clock=lambda: now)
    ServiceRunner(Feasibility, ctx).drain()
    return {
        stream: [m for m in _read(lab, stream) if m.producer == Feasibility.name]
        for stream in Feasibility.outputs
    }


def _read(lab: Lab, stream: Stream) -> list[Message]:
    entries = lab.bus.redis.xrange(lab.keys.stream(stream))
    return [lab.bus.decode(stream, fields) for _, fields in entries]


def _intents(out: dict[Stream, list[Message]]) -> list[Intent]:
    return [m.payload for m in out[Stream.INTENTS] if isinstance(m.payload, Intent)]


def _assert_refused(out: dict[Stream, list[Message]], rule: str, words: str) -> None:
    """No intent; the rule and its reason on `risk_events` and on `audit`."""
    assert out[Stream.INTENTS] == []
    events = [m.payload for m in out[Stream.RISK_EVENTS] if isinstance(m.payload, RiskEvent)]
    assert [e.data["rule"] for e in events] == [rule]
    assert words in events[0].detail
    refusals = [
        m.payload
        for m in out[Stream.AUDIT]
        if isinstance(m.payload, Audit) and m.payload.action == "intent.refused"
    ]
    assert [a.target for a in refusals] == [f"rule:{rule}"]
    assert words in refusals[0].reason


def _fill(
    lab: Lab, strategy: str, side: str, quantity: float, *, at: float, symbol: str = "BTC-USD"
) -> None:
    """A filled order in the records' ledger, as Execution would leave it."""
    coid = f"t-{uuid.uuid4().hex[:20]}"
    lab.records.record_order(
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        strategy=strategy,
        broker="paper",
    )
    lab.records.record_fill(
        execution_id=f"x-{coid}",
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=PRICE,
        filled_at=datetime.fromtimestamp(at, UTC),
    )
    lab.records.apply_order_update(
        coid,
        event_id=f"e-{coid}",
        status="filled",
        broker_at=datetime.fromtimestamp(at, UTC),
        filled_quantity=quantity,
        avg_price=PRICE,
    )


@pytest.fixture
def lab(pipeline_lab: Lab) -> Lab:
    """The pipeline lab with a price for the symbols the tests trade."""
    pipeline_lab.cache.set_price("BTC-USD", PRICE)
    pipeline_lab.cache.set_price("AAPL", 200.0)
    return pipeline_lab


# ---- sizing and the passing order ---------------------------------------------------------


def test_an_order_passing_every_rule_is_an_intent_sized_by_the_profile_and_kept(lab: Lab) -> None:
    signal = _signal(strength=0.5)
    out = _run(lab, signal)
    [intent] = _intents(out)
    # Balanced: largest position 10% of the 100,000 starting cash; strength 0.5 -> 5,000.
    assert intent.side.value == "buy"
    assert intent.quantity == pytest.approx(5_000 / PRICE)
    assert intent.checks_passed == [name for name, _ in RULES]
    profile = lab.records.profile("Balanced")
    assert intent.policy_profile == (
        f"Balanced@{profile.updated_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    )
    assert intent.signal_id == signal.message_id and not intent.reduce_only
    [message] = out[Stream.INTENTS]
    assert message.correlation_id == signal.correlation_id
    assert [r.message_id for r in lab.records.intents()] == [message.message_id]
    # the modified signal it decided on is kept with it (the modifier keeps nothing)
    kept = lab.records.signals(correlation_id=signal.correlation_id)
    assert [(k.message_id, k.stage) for k in kept] == [(signal.message_id, "modified")]
    # The intent row is the record of the clearance; its audit entry stays on the bus.
    assert [r for r in lab.records.audit_trail() if r.producer == Feasibility.name] == []
    assert out[Stream.RISK_EVENTS] == []
    assert [m.payload.action for m in out[Stream.AUDIT]] == ["intent.cleared"]  # type: ignore[attr-defined]


def test_a_signal_handled_again_keeps_one_intent_row(lab: Lab) -> None:
    signal = _signal()
    ctx = ServiceContext(lab, lab.settings, "feasibility-test", clock=lambda: WEEKDAY_OPEN)
    service = Feasibility(ctx)
    service.handle(signal)
    service.handle(signal)
    assert len(lab.records.intents()) == 1


def test_a_strategy_holding_the_side_it_asks_for_orders_nothing(lab: Lab) -> None:
    _fill(lab, "sma_cross", "buy", 0.1, at=WEEKDAY_OPEN - 3600)
    out = _run(lab, _signal(strength=0.8))
    assert out == {Stream.INTENTS: [], Stream.RISK_EVENTS: [], Stream.AUDIT: []}


def test_an_order_still_working_counts_as_held_so_a_repeated_signal_orders_once(
    lab: Lab,
) -> None:
    lab.records.record_order(
        client_order_id="t-working-1",
        symbol="BTC-USD",
        side="buy",
        quantity=0.1,
        strategy="sma_cross",
        broker="paper",
        status="submitted",
    )
    assert _run(lab, _signal(strength=0.8))[Stream.INTENTS] == []
    [intent] = _intents(_run(lab, _signal(strength=-0.5)))  # a flip sells the working 0.1 too
    assert intent.quantity == pytest.approx(0.1 + 5_000 / PRICE)


def test_a_flat_signal_closes_the_position_as_a_reducing_intent(lab: Lab) -> None:
    _fill(lab, "sma_cross", "buy", 0.1, at=WEEKDAY_OPEN - 3600)
    [intent] = _intents(_run(lab, _signal(strength=0.0)))
    assert (intent.side.value, intent.quantity, intent.reduce_only) == ("sell", 0.1, True)


def test_a_signal_below_the_profiles_confidence_opens_nothing(lab: Lab) -> None:
    out = _run(lab, _signal(confidence=0.3))
    assert out[Stream.INTENTS] == []
    [audit] = out[Stream.AUDIT]
    assert isinstance(audit.payload, Audit) and "confidence 0.3" in audit.payload.reason


# ---- one passing and one failing case per rule ---------------------------------------------


@pytest.mark.parametrize(
    ("scope", "target"), [("global", None), ("strategy", "sma_cross"), ("symbol", "BTC-USD")]
)
def test_kill_switch_halted_refuses_every_order_in_its_scope(
    lab: Lab, scope: str, target: str | None
) -> None:
    lab.kill_switches.engage(scope, "HALTED", target=target, actor="user:test", reason="drill")
    _assert_refused(_run(lab, _signal()), "kill_switch", "HALTED")
    # Out of the switch's scope an order still goes (global covers everything).
    other = _run(lab, _signal(strategy="rsi_reversion", symbol="ETH-USD"))
    if scope == "global":
        assert _intents(other) == []
    else:
        lab.cache.set_price("ETH-USD", 2_000.0)
        assert len(_intents(_run(lab, _signal(strategy="rsi_reversion", symbol="ETH-USD")))) == 1


@pytest.mark.parametrize(
    ("scope", "target"), [("global", None), ("strategy", "sma_cross"), ("symbol", "BTC-USD")]
)
def test_kill_switch_reducing_lets_only_exposure_reducing_orders_through(
    lab: Lab, scope: str, target: str | None
) -> None:
    lab.kill_switches.engage(scope, "REDUCING", target=target, actor="user:test", reason="drill")
    # Opening a position adds exposure: refused.
    _assert_refused(_run(lab, _signal(strength=0.5)), "kill_switch", "only reducing")
    # Closing a long reduces it: an intent.
    _fill(lab, "sma_cross", "buy", 0.1, at=WEEKDAY_OPEN - 3600)
    [intent] = _intents(_run(lab, _signal(strength=0.0)))
    assert intent.reduce_only and intent.side.value == "sell"
    assert intent.quantity == pytest.approx(0.1)


def test_a_flip_under_a_reducing_switch_only_closes_the_position(lab: Lab) -> None:
    _fill(lab, "sma_cross", "buy", 0.1, at=WEEKDAY_OPEN - 3600)
    lab.kill_switches.engage("global", "REDUCING", actor="user:test", reason="wind down")
    out = _run(lab, _signal(strength=-0.5))
    [intent] = _intents(out)
    assert (intent.side.value, intent.quantity, intent.reduce_only) == ("sell", 0.1, True)
    [audit] = out[Stream.AUDIT]
    assert isinstance(audit.payload, Audit) and "cut to closing" in audit.payload.reason


def test_a_refusal_is_kept_in_the_records_under_its_bus_ids(lab: Lab) -> None:
    lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    out = _run(lab, _signal())
    [event], [audit] = out[Stream.RISK_EVENTS], out[Stream.AUDIT]
    assert [r.message_id for r in lab.records.risk_events()] == [event.message_id]
    kept = [r.message_id for r in lab.records.audit_trail() if r.producer == Feasibility.name]
    assert kept == [audit.message_id]


def test_outputs_are_built_under_the_ids_the_runner_gives_them_in_a_batch_and_alone(
    lab: Lab,
) -> None:
    """Feasibility builds its outputs under their derived ids itself (nothing re-stamps them):
    a batch and the same signals handled one by one give the same ids and payloads, and the
    records keep each once under those ids."""
    signals = [
        _signal(),  # crypto on a Saturday: cleared (intent, audit)
        _signal(symbol="AAPL"),  # the exchange is closed: refused (risk event, audit)
        _signal(strategy="rsi_reversion", confidence=0.3),  # too unsure: skipped (audit)
    ]

    def ctx(name: str) -> ServiceContext:
        return ServiceContext(lab, lab.settings, name, clock=lambda: SATURDAY)

    batch = Feasibility(ctx("feasibility-batch")).handle_batch(signals)
    alone = [Feasibility(ctx("feasibility-alone")).handle(s) for s in signals]
    assert [[type(m.payload) for m in out] for out in batch] == [
        [Intent, Audit],
        [RiskEvent, Audit],
        [Audit],
    ]
    for signal, out, again in zip(signals, batch, alone, strict=True):
        ids = [
            derived_message_id(signal.message_id, stage=Feasibility.name, index=i) for i in (0, 1)
        ]
        assert [m.message_id for m in out] == ids[: len(out)]
        assert [m.message_id for m in again] == ids[: len(out)]
        assert [m.payload for m in again] == [m.payload for m in out]
        assert {m.causation_id for m in out} == {signal.message_id}
    assert [r.message_id for r in lab.records.intents()] == [batch[0][0].message_id]
    assert [r.message_id for r in lab.records.risk_events()] == [batch[1][0].message_id]
    kept = [r.message_id for r in lab.records.audit_trail() if r.producer == Feasibility.name]
    assert sorted(kept) == sorted([batch[1][1].message_id, batch[2][0].message_id])
    # every signal decided on is kept once, whatever became of it
    assert sorted(r.message_id for r in lab.records.signals()) == sorted(
        s.message_id for s in signals
    )


def test_an_explicit_clear_resumes_intents(lab: Lab) -> None:
    lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    _assert_refused(_run(lab, _signal()), "kill_switch", "HALTED")
    lab.kill_switches.clear("global", actor="user:test", reason="drill over")
    assert len(_intents(_run(lab, _signal()))) == 1


def test_circuit_breaker_open_refuses_and_closed_passes(lab: Lab) -> None:
    breaker = lab.flags.circuit_breaker(BROKER_DEPENDENCY)
    breaker.record_failure()
    assert len(_intents(_run(lab, _signal()))) == 1  # one failure: still closed
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    for _ in range(5):
        breaker.record_failure()
    _assert_refused(_run(lab, _signal(strategy="rsi_reversion")), "circuit_breaker", "open")


def test_max_daily_loss_refuses_new_exposure_once_the_days_loss_reaches_the_limit(lab: Lab) -> None:
    day = datetime.fromtimestamp(WEEKDAY_OPEN, UTC).date().isoformat()
    lab.records.set_config(
        DAY_START_EQUITY_KEY, {"day": day, "equity": 100_000.0}, changed_by="test", reason="t"
    )
    lab.cache.set_account(balance=98_500.0, portfolio_value=98_500.0)  # -1.5% < Balanced's 2%
    assert len(_intents(_run(lab, _signal()))) == 1
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    lab.cache.set_account(balance=97_900.0, portfolio_value=97_900.0)  # -2.1%
    _assert_refused(_run(lab, _signal(strategy="rsi_reversion")), "max_daily_loss", "daily loss")


def test_position_limit_counts_every_strategys_position_in_the_symbol(lab: Lab) -> None:
    _fill(lab, "other", "buy", 0.09, at=WEEKDAY_OPEN - 3600)  # 4,500 held by another strategy
    assert len(_intents(_run(lab, _signal(strength=0.1)))) == 1  # +500 -> 5,000 <= 10,000
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    out = _run(lab, _signal(strategy="rsi_reversion", strength=0.9))  # +9,000 -> 13,500
    _assert_refused(out, "position_limit", "position in BTC-USD")


def test_gross_exposure_counts_the_other_symbols_positions(lab: Lab) -> None:
    lab.cache.set_price("ETH-USD", 2_000.0)
    lab.cache.set_position("ETH-USD", quantity=90.0, avg_price=2_000.0)  # 180,000 of 200,000
    assert len(_intents(_run(lab, _signal(strength=0.5)))) == 1  # +5,000 -> 185,000
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    lab.cache.set_position("ETH-USD", quantity=98.0, avg_price=2_000.0)  # 196,000
    out = _run(lab, _signal(strategy="rsi_reversion", strength=0.5))
    _assert_refused(out, "gross_exposure", "gross exposure")


def test_open_positions_refuses_a_new_symbol_once_the_profile_maximum_is_open(lab: Lab) -> None:
    others = [f"C{i}-USD" for i in range(10)]  # Balanced allows 10 open positions
    for symbol in others[:9]:
        lab.cache.set_price(symbol, 10.0)
        lab.cache.set_position(symbol, quantity=1.0, avg_price=10.0)
    assert len(_intents(_run(lab, _signal(strength=0.1)))) == 1  # the 10th position
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    lab.cache.set_price(others[9], 10.0)
    lab.cache.set_position(others[9], quantity=1.0, avg_price=10.0)
    out = _run(lab, _signal(strategy="rsi_reversion", strength=0.1))  # would be the 11th
    _assert_refused(out, "open_positions", "10 positions are open")


def test_order_notional_above_the_configured_maximum_is_refused(lab: Lab) -> None:
    lab.records.set_config(MAX_ORDER_NOTIONAL_KEY, 6_000.0, changed_by="test", reason="t")
    assert len(_intents(_run(lab, _signal(strength=0.5)))) == 1  # 5,000
    lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
    out = _run(lab, _signal(strategy="rsi_reversion", strength=0.7))  # 7,000
    _assert_refused(out, "order_notional", "above the maximum")


def test_exit_cooldown_refuses_reopening_soon_after_an_exit(lab: Lab) -> None:
    _fill(lab, "sma_cross", "buy", 0.1, at=WEEKDAY_OPEN - 600)
    _fill(lab, "sma_cross", "sell", 0.1, at=WEEKDAY_OPEN - 5)
    _assert_refused(_run(lab, _signal()), "exit_cooldown", "cooldown")
    lab.bus.redis.delete(lab.keys.stream(Stream.RISK_EVENTS), lab.keys.stream(Stream.AUDIT))
    assert len(_intents(_run(lab, _signal(), now=WEEKDAY_OPEN + 60))) == 1


def test_market_hours_refuse_equities_while_their_exchange_is_closed(lab: Lab) -> None:
    _assert_refused(_run(lab, _signal(symbol="AAPL"), now=SATURDAY), "market_hours", "closed")
    lab.bus.redis.delete(lab.keys.stream(Stream.RISK_EVENTS), lab.keys.stream(Stream.AUDIT))
    assert len(_intents(_run(lab, _signal(symbol="AAPL"), now=WEEKDAY_OPEN))) == 1


def test_crypto_trades_around_the_clock(lab: Lab) -> None:
    assert len(_intents(_run(lab, _signal(), now=SATURDAY))) == 1


def test_broker_rate_limit_refuses_orders_beyond_the_budget(lab: Lab) -> None:
    lab.records.set_config(BROKER_RATE_LIMIT_KEY, 1, changed_by="test", reason="t")
    out = _run(lab, _signal(), _signal(strategy="rsi_reversion"))
    assert len(_intents(out)) == 1
    _assert_refused({**out, Stream.INTENTS: []}, "rate_limit", "rate limit")


# ---- the flags tier down -------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stopped", "frozen"])
def test_no_intent_leaves_while_the_flags_tier_is_unreachable(
    fault: str,
    redis_server_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    pipeline_settings: Settings,
    shared_redis_url: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    flags_server = redis_server_factory("flags", policy="volatile-ttl")
    base = shared_redis_url.rsplit("/", 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = settings_factory(
            namespace=pipeline_settings.namespace,
            bus_url=f"{base}/0",
            cache_url=f"{base}/1",
            flags_url=flags_server.url,
            records_url=pg_url,
            lake_url=f"chdb://{tmp_path / 'lake'}",
        )
        lab = tl.connect(settings, start=False)
    try:
        operator.arm(lab, actor="user:test", reason="flags test")
        lab.cache.set_price("BTC-USD", PRICE)
        assert len(_intents(_run(lab, _signal()))) == 1
        lab.bus.redis.delete(lab.keys.stream(Stream.INTENTS), lab.keys.stream(Stream.AUDIT))
        if fault == "stopped":
            flags_server.stop()
        else:  # SIGSTOP: connections stay open and nothing answers; the client times out
            os.kill(flags_server.pid, posix_signal.SIGSTOP)
        try:
            out = _run(lab, _signal(strategy="rsi_reversion"))
        finally:
            if fault == "frozen":
                os.kill(flags_server.pid, posix_signal.SIGCONT)
        _assert_refused(out, "kill_switch", "flags tier unreachable")
    finally:
        lab.close()
