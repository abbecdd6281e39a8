"""The agent service on real Redis and the records on PostgreSQL and SQLite: each rule engages
the agent's kill switch with an audit entry naming the rule and its figures, and releases it
when the condition clears; a manual switch outranks it and is never cleared by it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent_support import Clock, intent_message

from tradeos_lab import operator
from tradeos_lab.agent.rules import EventWindow
from tradeos_lab.contracts import (
    Audit,
    AuditMessage,
    Message,
    Order,
    RiskEvent,
    RiskEventMessage,
    RiskKind,
    Severity,
    derive,
    new_message,
)
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.agent import Agent
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource, KillSwitch


def _at(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


def risk(clock: Clock, kind: RiskKind, severity: Severity = Severity.WARNING) -> Message:
    payload = RiskEvent(
        kind=kind, severity=severity, scope="symbol:BTC-USD", detail="test", data={}, ts=_at(clock)
    )
    return new_message(payload, producer="feasibility", produced_at=_at(clock))


def order(clock: Clock, cid: str, *, rejected: bool = False, submit: bool = True) -> Message:
    """Execution's order on `orders`: the answer to its intent (`submit`: the runner derives
    its id from the intent's), or a later report of the broker's."""
    intent = intent_message("BTC-USD", _at(clock))
    payload = Order(
        client_order_id=cid,
        intent_id=intent.message_id,
        strategy="sma_cross",
        symbol="BTC-USD",
        side="buy",
        quantity=1.0,
        order_type="market",
        time_in_force="gtc",
        status="rejected" if rejected else "accepted",
        filled_quantity=0.0,
        reason="insufficient buying power" if rejected else None,
        ts=_at(clock),
    )
    message = derive(intent, payload, producer="execution", produced_at=_at(clock))
    if not submit:
        return message
    answer = derived_message_id(intent.message_id, stage="execution", index=0)
    return message.model_copy(update={"message_id": answer})


def order_audit(clock: Clock, cid: str, action: str = "order.submit") -> AuditMessage:
    """Execution's audit entry of an order attempt, as the audit trail keeps it."""
    payload = Audit(
        actor="service:execution",
        action=action,
        target=f"order:{cid}",
        reason="submitted",
        old_value=None,
        new_value=None,
    )
    message = new_message(payload, producer="execution", produced_at=_at(clock))
    assert isinstance(message, AuditMessage)
    return message


def agent_switches(lab: Lab) -> dict[str, KillSwitch]:
    return {
        f"{s.scope.value}:{s.target}": s
        for s in lab.kill_switches.state().switches
        if s.source is KillSource.AGENT
    }


def actions(messages: list[Message] | tuple[Message, ...]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        assert isinstance(m, AuditMessage)
        out.append((m.payload.action, m.payload.target))
    return out


def figures(message: Message) -> dict[str, Any]:
    assert isinstance(message, AuditMessage)
    value = message.payload.new_value
    assert isinstance(value, dict)
    return dict(value["figures"])


def feed(agent: Agent, messages: list[Message]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        out += agent.handle(m)
    return out


def test_repeated_breaker_trips_halt_until_the_window_passes(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(2)])
    assert out == [] and agent_switches(lab) == {}
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER)])
    assert actions(out) == [("agent.engaged", "rule:circuit_breaker")]
    assert figures(out[0]) == {"trips": 3, "limit": 3, "window_s": 3600.0}
    switch = agent_switches(lab)["global:*"]
    assert switch.mode is KillMode.HALTED and switch.actor == "agent"
    assert switch.expires_at is not None and abs(switch.expires_at - switch.since - 3600) < 1e-3
    decision = lab.kill_switches.check_order("sma_cross", "BTC-USD", "buy", 1, book=lab.records)
    assert not decision.allowed
    clock.advance(3601)
    out = agent.evaluate()
    assert ("agent.released", "rule:circuit_breaker") in actions(out)
    released = next(m for m in out if actions([m])[0][0] == "agent.released")
    assert figures(released)["trips"] == 0
    assert agent_switches(lab) == {}


def test_a_batch_is_judged_once_on_its_counts_after_its_last_counted_event(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    trips = [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(4)]
    ignored = order(clock, "o-1", submit=False)  # a broker's report: no rule counts it
    out = agent.handle_batch([*trips, ignored])
    assert [list(o) for o in out[:3]] == [[], [], []] and list(out[4]) == []
    assert actions(out[3]) == [("agent.engaged", "rule:circuit_breaker")]
    assert out[3][0].causation_id == trips[3].message_id
    assert figures(out[3][0])["trips"] == 4  # the whole batch counted before the judgement
    assert agent_switches(lab)["global:*"].mode is KillMode.HALTED
    assert [list(o) for o in agent.handle_batch(trips)] == [[]] * 4  # redelivered: no change


def test_events_counted_out_of_order_leave_the_window_by_their_own_time(clock: Clock) -> None:
    window = EventWindow(span_s=100.0)
    assert window.add(clock.now, "b")
    assert window.add(clock.now - 50, "a")  # the records' copy of an older event, read late
    assert not window.add(clock.now, "b")
    assert window.count(clock.now, window_s=10.0) == 1
    assert window.count(clock.now, window_s=60.0) == 2
    assert window.count(clock.now + 60, window_s=100.0) == 1  # "a" is past the span
    assert window.add(clock.now - 50, "a")  # and, dropped, it would count again
    assert window.count(clock.now + 200, window_s=1_000.0) == 0


def test_reconciliation_mismatches_make_the_account_reducing(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    out = feed(agent, [risk(clock, RiskKind.RECONCILIATION) for _ in range(3)])
    assert actions(out) == [("agent.engaged", "rule:reconciliation")]
    switch = agent_switches(lab)["global:*"]
    assert switch.mode is KillMode.REDUCING and switch.expires_at is None
    clock.advance(3601)
    assert actions(agent.evaluate()) == [("agent.released", "rule:reconciliation")]
    assert agent_switches(lab) == {}


def test_an_execution_error_rate_above_the_limit_halts(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    out = feed(agent, [order(clock, f"o-{i}") for i in range(4)])
    out += feed(
        agent, [risk(clock, RiskKind.EXECUTION_FAILURE, Severity.CRITICAL) for _ in range(2)]
    )
    assert out == []  # 2 errors of 4 attempts: too few attempts to judge
    out = feed(agent, [order(clock, "o-0", submit=False)])  # a report, no attempt
    assert out == []
    out = feed(agent, [order(clock, "o-1", rejected=True, submit=False)])
    assert actions(out) == []  # 2 of 5: 40% < 50%
    out = feed(agent, [risk(clock, RiskKind.EXECUTION_FAILURE, Severity.CRITICAL)])
    assert actions(out) == [("agent.engaged", "rule:execution_errors")]
    assert figures(out[0])["error_rate"] == 0.6
    assert agent_switches(lab)["global:*"].mode is KillMode.HALTED
    clock.advance(901)
    assert actions(agent.evaluate()) == [("agent.released", "rule:execution_errors")]
    assert agent_switches(lab) == {}


def test_a_drawdown_beyond_the_profile_limit_halts_then_releases_when_recovered(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    lab.cache.set_account(balance=100_000, portfolio_value=100_000)
    assert agent.evaluate() == []
    clock.advance(60)
    lab.cache.set_account(balance=91_000, portfolio_value=91_000)
    assert agent.evaluate() == []  # 9% < Balanced's 10%
    clock.advance(60)
    lab.cache.set_account(balance=88_000, portfolio_value=88_000)
    out = agent.evaluate()
    assert actions(out) == [("agent.engaged", "rule:drawdown")]
    assert figures(out[0]) == {
        "peak_equity": 100_000,
        "equity": 88_000,
        "drawdown_pct": 12.0,
        "limit_pct": 10.0,
        "window_s": 86_400.0,
    }
    assert agent_switches(lab)["global:*"].reason.startswith("[drawdown]")
    clock.advance(60)
    lab.cache.set_account(balance=99_000, portfolio_value=99_000)
    out = agent.evaluate()
    assert actions(out) == [("agent.released", "rule:drawdown")]
    assert figures(out[0])["drawdown_pct"] == 1.0
    assert agent_switches(lab) == {}


def test_a_restarted_agent_still_sees_the_drawdown_windows_peak(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    """The equity samples are kept in the cache: the peak before a restart still counts."""
    lab.cache.set_account(balance=100_000, portfolio_value=100_000)
    assert agent.evaluate() == []
    clock.advance(60)
    lab.cache.set_account(balance=95_000, portfolio_value=95_000)
    assert agent.evaluate() == []
    restarted = Agent(ServiceContext(lab=lab, settings=lab.settings, instance="t", clock=clock))
    clock.advance(60)
    lab.cache.set_account(balance=88_000, portfolio_value=88_000)
    out = restarted.evaluate()
    assert actions(out) == [("agent.engaged", "rule:drawdown")]
    assert figures(out[0])["peak_equity"] == 100_000
    # Samples older than the window are dropped from the cache's copy too.
    clock.advance(86_401)
    lab.cache.set_account(balance=88_000, portfolio_value=88_000)
    assert actions(restarted.evaluate()) == [("agent.released", "rule:drawdown")]
    again = Agent(ServiceContext(lab=lab, settings=lab.settings, instance="t", clock=clock))
    clock.advance(5)
    out = again.evaluate()
    assert out == [] and again.equity[0][1] == 88_000 and len(again.equity) == 2


def test_a_symbol_whose_price_stops_moving_is_halted_alone(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    lab.cache.set_price("BTC-USD", 50_000, ts=clock.now)
    lab.cache.set_price("ETH-USD", 3_000, ts=clock.now)
    assert agent.evaluate() == []
    clock.advance(400)
    lab.cache.set_price("ETH-USD", 3_001, ts=clock.now)
    assert agent.evaluate() == []
    clock.advance(200)
    out = agent.evaluate()
    assert actions(out) == [("agent.engaged", "rule:stale_data")]
    assert figures(out[0])["symbol"] == "BTC-USD" and figures(out[0])["unchanged_s"] == 600
    assert set(agent_switches(lab)) == {"symbol:BTC-USD"}
    assert lab.kill_switches.check_order("s", "ETH-USD", "buy", 1, book=lab.records).allowed
    lab.cache.set_price("BTC-USD", 50_100, ts=clock.now)
    assert actions(agent.evaluate()) == [("agent.released", "rule:stale_data")]
    assert agent_switches(lab) == {}


def test_two_rules_share_the_global_switch_until_both_release(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    feed(agent, [risk(clock, RiskKind.RECONCILIATION) for _ in range(3)])
    clock.advance(1800)
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(3)])
    assert actions(out) == [("agent.engaged", "rule:circuit_breaker")]
    assert agent_switches(lab)["global:*"].mode is KillMode.HALTED
    clock.advance(1801)  # the mismatches leave their window; the trips stay
    assert actions(agent.evaluate()) == [("agent.released", "rule:reconciliation")]
    switch = agent_switches(lab)["global:*"]
    assert switch.mode is KillMode.HALTED and switch.reason.startswith("[circuit_breaker]")
    clock.advance(1800)
    assert actions(agent.evaluate()) == [("agent.released", "rule:circuit_breaker")]
    assert agent_switches(lab) == {}


def test_a_manual_switch_outranks_the_agent_which_never_clears_it(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    operator.halt(lab, actor="user:ops", reason="maintenance")
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(4)])
    assert actions(out) == [("agent.deferred", "rule:circuit_breaker")]  # once per episode
    assert agent_switches(lab) == {}
    clock.advance(3601)
    assert agent.evaluate() == []
    manual = [s for s in lab.kill_switches.state().switches if s.source is KillSource.MANUAL]
    assert [(s.actor, s.reason) for s in manual] == [("user:ops", "maintenance")]


def test_an_operator_clearing_the_agent_switch_is_obeyed_until_the_rule_releases(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(3)])
    assert "global:*" in agent_switches(lab)
    operator.clear(lab, actor="user:ops", reason="checked the broker", source=KillSource.AGENT)
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER)])
    assert actions(out) == [("agent.overridden", "rule:circuit_breaker")]
    assert agent_switches(lab) == {}
    assert agent.evaluate() == []  # still triggered, still not engaged again
    clock.advance(3601)
    agent.evaluate()  # the rule released
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(3)])
    assert actions(out) == [("agent.engaged", "rule:circuit_breaker")]


def test_the_agent_never_clears_an_agent_source_switch_it_did_not_write(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    other = operator.operator_switches(lab, KillSource.AGENT)
    other.engage(KillScope.GLOBAL, KillMode.HALTED, actor="user:ops", reason="by hand")
    out = feed(agent, [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(3)])
    assert actions(out) == [("agent.deferred", "rule:circuit_breaker")]
    clock.advance(3601)
    agent.evaluate()
    assert agent_switches(lab)["global:*"].actor == "user:ops"


def test_a_redelivered_event_counts_once(lab: Lab, agent: Agent, clock: Clock) -> None:
    trip = risk(clock, RiskKind.CIRCUIT_BREAKER)
    assert feed(agent, [trip, trip, trip]) == []
    assert agent_switches(lab) == {}


def test_a_restarted_agent_counts_the_recorded_trips_and_takes_back_its_switch(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    events = [risk(clock, RiskKind.CIRCUIT_BREAKER) for _ in range(3)]
    for e in events:
        lab.records.record_risk_event(e)  # as the audit trail keeps them
    # The first one the agent sees brings in the records' three; itself is one of them.
    out = feed(agent, events[:1])
    assert actions(out) == [("agent.engaged", "rule:circuit_breaker")]
    restarted = Agent(ServiceContext(lab=lab, settings=lab.settings, instance="t", clock=clock))
    clock.advance(3601)
    assert actions(restarted.evaluate()) == [("agent.released", "rule:circuit_breaker")]
    assert agent_switches(lab) == {}


def test_a_restarted_agent_judges_the_error_rate_on_the_recorded_orders(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    for i in range(4):
        lab.records.record_audit(order_audit(clock, f"o-{i}"))
    lab.records.record_audit(order_audit(clock, "o-0", "order.rejected"))
    for _ in range(3):
        event = risk(clock, RiskKind.EXECUTION_FAILURE, Severity.CRITICAL)
        assert isinstance(event, RiskEventMessage)
        lab.records.record_risk_event(event)
    out = agent.evaluate()
    assert actions(out) == [("agent.engaged", "rule:execution_errors")]
    assert figures(out[0])["attempts"] == 5 and figures(out[0])["errors"] == 3


def test_an_order_attempt_counts_once_from_the_records_and_the_stream_and_redelivered(
    lab: Lab, agent: Agent, clock: Clock
) -> None:
    lab.records.record_audit(order_audit(clock, "o-1"))  # kept before the agent started
    attempt = order(clock, "o-1")
    feed(agent, [attempt, attempt, order(clock, "o-2"), order(clock, "o-2", submit=False)])
    assert agent.order_attempts.count(clock.now, 900) == 2
    feed(agent, [order(clock, "o-2", rejected=True, submit=False)])  # the broker's rejection
    assert agent.order_attempts.count(clock.now, 900) == 3


def test_orders_of_other_producers_are_no_attempts(agent: Agent, clock: Clock) -> None:
    reconciled = order(clock, "o-1").model_copy(update={"producer": "reconciliation"})
    feed(agent, [reconciled])
    assert agent.order_attempts.count(clock.now, 900) == 0
