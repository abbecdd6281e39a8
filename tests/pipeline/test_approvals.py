"""The approval queue on the machine's Redis and PostgreSQL: Feasibility parks an intent above the
profile's notional threshold (and passes one below it); an operator's approval publishes it once
under its parked id, a rejection and an expiry land on `risk_events` and `audit`; a HALTED kill
switch wins over an approval."""

from __future__ import annotations

import json
import time
import uuid
import warnings
from datetime import UTC, datetime

import pytest
import redis
from click.testing import CliRunner, Result

from tradeos_lab import operator
from tradeos_lab.cli import cli
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
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.feasibility import APPROVAL_STAGE, Feasibility
from tradeos_lab.pipeline.services.rules import RULES
from tradeos_lab.pipeline.supervisor import settings_environment
from tradeos_lab.settings import SharedRedisServerWarning
from tradeos_lab.tiers.flags import ApprovalQueue, ParkedIntent

PRICE = 50_000.0
WEEKDAY_OPEN = datetime(2026, 12, 2, 16, 0, tzinfo=UTC).timestamp()
OPERATOR = "user:approver"


def _signal(*, strength: float = 0.5, strategy: str = "sma_cross") -> Message:
    direction = "long" if strength > 0 else "short" if strength < 0 else "flat"
    return new_message(
        ModifiedSignal(
            raw_signal_id=new_message_id(),
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            ts=datetime(2026, 12, 2, 15, 59, tzinfo=UTC),
            direction=direction,
            raw_strength=strength,
            adjusted_strength=strength,
            confidence=0.9,
            modifiers=[],
        ),
        producer="signal_modifier",
    )


def _read(lab: Lab, stream: Stream) -> list[Message]:
    entries = lab.bus.redis.xrange(lab.keys.stream(stream))
    return [lab.bus.decode(stream, fields) for _, fields in entries]


def _run(lab: Lab, *signals: Message) -> ServiceRunner:
    for signal in signals:
        lab.bus.publish(Stream.SIGNALS_MODIFIED, signal)
    ctx = ServiceContext(lab, lab.settings, "feasibility-test", clock=lambda: WEEKDAY_OPEN)
    runner = ServiceRunner(Feasibility, ctx)
    runner.drain()
    return runner


def _intent_audits(lab: Lab) -> list[Audit]:
    """The audit entries about intents (the kill switches' own left aside)."""
    entries = [m.payload for m in _read(lab, Stream.AUDIT)]
    return [a for a in entries if isinstance(a, Audit) and a.action.startswith("intent.")]


def _actions(lab: Lab) -> list[str]:
    return [a.action for a in _intent_audits(lab)]


def _approval_events(lab: Lab) -> list[Message]:
    return [
        m
        for m in _read(lab, Stream.RISK_EVENTS)
        if isinstance(m.payload, RiskEvent) and m.payload.data.get("rule") == "approval"
    ]


def _with_threshold(lab: Lab, notional: float | None, ttl_s: float = 300.0) -> None:
    """The active profile (Balanced) with an approval threshold, as a new activated version."""
    version = lab.records.save_profile_version(
        "Balanced",
        {"approval_notional": notional, "approval_ttl_s": ttl_s},
        created_by="user:test",
        reason="approval test",
    )
    lab.records.activate_profile("Balanced", version.version, activated_by="user:test")


@pytest.fixture
def lab(pipeline_lab: Lab) -> Lab:
    pipeline_lab.cache.set_price("BTC-USD", PRICE)
    return pipeline_lab


def _parked(lab: Lab) -> ParkedIntent:
    [parked] = operator.pending_approvals(lab)
    return parked


# ---- Feasibility parks above the threshold ------------------------------------------------


def test_an_intent_above_the_threshold_is_parked_with_its_signal_and_sizing_not_published(
    lab: Lab,
) -> None:
    _with_threshold(lab, 4_000.0)  # Balanced sizes strength 0.5 at 5,000
    signal = _signal(strength=0.5)
    _run(lab, signal)
    assert _read(lab, Stream.INTENTS) == []
    assert lab.records.intents() == []
    parked = _parked(lab)
    assert parked.intent_id == derived_message_id(signal.message_id, stage=APPROVAL_STAGE, index=0)
    assert parked.intent.signal_id == signal.message_id
    assert parked.notional == pytest.approx(5_000.0) and parked.threshold == 4_000.0
    assert parked.signal["direction"] == "long" and parked.signal["confidence"] == 0.9
    assert parked.intent.checks_passed == [name for name, _ in RULES]
    assert parked.deadline is not None and parked.parked_at is not None
    assert parked.deadline - parked.parked_at == pytest.approx(300.0)
    [audit] = _intent_audits(lab)
    assert audit.action == "intent.parked" and audit.target == f"intent:{parked.intent_id}"
    assert "approval threshold 4,000.00" in audit.reason


def test_an_intent_below_the_threshold_or_with_none_set_is_published(lab: Lab) -> None:
    _with_threshold(lab, 6_000.0)
    _run(lab, _signal(strength=0.5))
    assert len(_read(lab, Stream.INTENTS)) == 1
    assert operator.pending_approvals(lab) == []


def test_the_seeded_conservative_profile_has_a_threshold_and_balanced_none(lab: Lab) -> None:
    assert lab.records.profile("Conservative").approval_notional == 2_500.0
    assert lab.records.profile("Balanced").approval_notional is None
    assert lab.records.profile("Balanced").approval_ttl_s == 300.0


def test_later_signals_of_a_waiting_strategy_and_symbol_park_nothing_more(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    _run(lab, _signal(strength=0.5))
    _run(lab, _signal(strength=0.6))
    assert len(operator.pending_approvals(lab)) == 1
    assert _actions(lab) == ["intent.parked"]


def test_an_order_that_only_reduces_exposure_never_waits(lab: Lab) -> None:
    coid = f"t-{uuid.uuid4().hex[:20]}"
    lab.records.record_order(
        client_order_id=coid,
        symbol="BTC-USD",
        side="buy",
        quantity=0.2,
        strategy="sma_cross",
        broker="paper",
    )
    lab.records.record_fill(
        execution_id=f"x-{coid}",
        client_order_id=coid,
        symbol="BTC-USD",
        side="buy",
        quantity=0.2,
        price=PRICE,
        filled_at=datetime.fromtimestamp(WEEKDAY_OPEN - 3600, UTC),
    )
    lab.records.apply_order_update(
        coid,
        event_id=f"e-{coid}",
        status="filled",
        broker_at=datetime.fromtimestamp(WEEKDAY_OPEN - 3600, UTC),
        filled_quantity=0.2,
        avg_price=PRICE,
    )
    _with_threshold(lab, 1_000.0)
    _run(lab, _signal(strength=0.0))  # closing 0.2 at 50,000: 10,000 notional, reducing
    [intent] = [m.payload for m in _read(lab, Stream.INTENTS)]
    assert isinstance(intent, Intent) and intent.reduce_only
    assert operator.pending_approvals(lab) == []


def test_parking_fails_closed_when_the_flags_tier_is_down(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    ctx = ServiceContext(lab, lab.settings, "feasibility-test", clock=lambda: WEEKDAY_OPEN)
    service = Feasibility(ctx)
    service.profiles.get()  # the profile is read before the flags tier goes
    good = lab.flags.approvals
    lab.flags.approvals = ApprovalQueue(
        redis.Redis(port=1, socket_connect_timeout=0.2), keys=lab.keys
    )
    try:
        out = service.handle(_signal(strength=0.5))
    finally:
        lab.flags.approvals = good
    kinds = [type(m.payload).__name__ for m in out]
    assert kinds == ["RiskEvent", "Audit"], kinds
    assert isinstance(out[0].payload, RiskEvent) and "not parked" in out[0].payload.detail
    assert good.pending() == []


# ---- the operator's decisions --------------------------------------------------------------


def test_approving_publishes_the_intent_once_under_its_parked_id_audited(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    _run(lab, _signal(strength=0.5))
    parked = _parked(lab)
    first = operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="looks right")
    again = operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="twice")
    assert first.done and not again.done and "not waiting" in again.detail
    [published] = _read(lab, Stream.INTENTS)
    assert published.message_id == parked.intent_id
    assert published.payload == parked.intent
    assert published.correlation_id == parked.message.correlation_id
    assert operator.pending_approvals(lab) == []
    [approved] = [a for a in _intent_audits(lab) if a.action == "intent.approved"]
    assert (approved.actor, approved.reason) == (OPERATOR, "looks right")
    assert approved.target == f"intent:{parked.intent_id}"
    assert [r.message_id for r in lab.records.intents()] == [parked.intent_id]
    assert "intent.approved" in [a.action for a in lab.records.audit_trail()]


def test_a_halted_kill_switch_wins_over_an_approval(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    _run(lab, _signal(strength=0.5))
    parked = _parked(lab)
    operator.halt(lab, actor="user:risk", reason="drill")
    outcome = operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="go")
    assert not outcome.done and "not published" in outcome.detail and "HALTED" in outcome.detail
    assert _read(lab, Stream.INTENTS) == []
    assert [p.intent_id for p in operator.pending_approvals(lab)] == [parked.intent_id]
    operator.clear(lab, actor="user:risk", reason="drill over")
    assert operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="go").done
    assert len(_read(lab, Stream.INTENTS)) == 1


def test_rejecting_goes_to_risk_events_and_audit_with_the_operator_and_reason(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    _run(lab, _signal(strength=0.5))
    parked = _parked(lab)
    outcome = operator.reject(lab, parked.intent_id, actor=OPERATOR, reason="too big today")
    assert outcome.done
    assert not operator.reject(lab, parked.intent_id, actor=OPERATOR, reason="again").done
    [message] = _approval_events(lab)
    event = message.payload
    assert isinstance(event, RiskEvent)
    assert OPERATOR in event.detail and "too big today" in event.detail
    assert event.data["intent_id"] == parked.intent_id
    assert "intent.rejected" in _actions(lab)
    assert _read(lab, Stream.INTENTS) == []
    assert operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="late").done is False
    assert [r.message_id for r in lab.records.risk_events()] == [message.message_id]


def test_an_intent_not_approved_in_time_is_rejected_by_the_sweep(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0, ttl_s=0.5)
    runner = _run(lab, _signal(strength=0.5))
    parked = _parked(lab)
    assert parked.deadline is not None
    runner.fire_timers()
    assert _approval_events(lab) == []  # not yet expired
    while time.time() <= parked.deadline + 0.05:
        time.sleep(0.05)
    runner.fire_timers()
    [message] = _approval_events(lab)
    event = message.payload
    assert isinstance(event, RiskEvent)
    assert "not approved within 0.5 s" in event.detail
    assert event.data["intent_id"] == parked.intent_id
    assert "intent.expired" in _actions(lab)
    assert operator.pending_approvals(lab) == []
    assert not operator.approve(lab, parked.intent_id, actor=OPERATOR, reason="late").done
    assert _read(lab, Stream.INTENTS) == []
    assert [r.message_id for r in lab.records.risk_events()] == [message.message_id]


# ---- the queue in the flags tier -----------------------------------------------------------


def test_a_decided_intent_is_not_parked_again_and_every_key_has_a_ttl(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    signal = _signal(strength=0.5)
    _run(lab, signal)
    parked = _parked(lab)
    queue = lab.flags.approvals
    assert queue.park(parked) == parked.deadline  # parked again: the same deadline
    taken = queue.take(parked.intent_id)
    assert taken is not None and queue.take(parked.intent_id) is None
    assert queue.park(parked) is None  # a signal handled again parks nothing decided
    keys: Keys = lab.keys
    client = lab.flags.redis
    for key in (keys.approvals(), keys.approval_deadlines(), keys.approvals_decided()):
        if client.exists(key):
            assert client.ttl(key) > 0, key
    queue.restore(taken)
    assert [p.intent_id for p in queue.pending()] == [parked.intent_id]


# ---- the command line ----------------------------------------------------------------------


def _cli(lab: Lab, *args: str, code: int = 0) -> Result:
    with warnings.catch_warnings():  # the test's servers are one Redis, as the lab's
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        result = CliRunner().invoke(
            cli, list(args), env=settings_environment(lab.settings), catch_exceptions=False
        )
    assert result.exit_code == code, result.output
    return result


def test_the_cli_lists_approves_and_rejects_waiting_intents(lab: Lab) -> None:
    _with_threshold(lab, 4_000.0)
    assert "no intent waits" in _cli(lab, "approvals", "list").output
    _run(lab, _signal(strength=0.5, strategy="sma_cross"))
    _run(lab, _signal(strength=0.5, strategy="rsi_reversion"))
    listed = json.loads(_cli(lab, "approvals", "list", "--json").output)
    assert sorted(r["strategy"] for r in listed) == ["rsi_reversion", "sma_cross"]
    assert all(0 < r["expires_in_s"] <= 300 for r in listed)
    first, second = (r["intent_id"] for r in listed)
    out = _cli(lab, "approvals", "approve", first, "--actor", "user:cli", "--reason", "ok")
    assert "approved" in out.output
    again = _cli(
        lab, "approvals", "approve", first, "--actor", "user:cli", "--reason", "ok", code=1
    )
    assert "not waiting" in again.output
    _cli(lab, "approvals", "reject", second, "--actor", "user:cli", "--reason", "no")
    assert [m.message_id for m in _read(lab, Stream.INTENTS)] == [first]
    assert [m.payload.data["intent_id"] for m in _approval_events(lab)] == [second]  # type: ignore[union-attr]
    assert [a.actor for a in _intent_audits(lab) if a.action != "intent.parked"] == [
        "user:cli",
        "user:cli",
    ]
