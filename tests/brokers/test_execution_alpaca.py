"""Execution trading at Alpaca (the local trading server) with the machine's Redis and
PostgreSQL: exactly one broker order per intent whatever the faults, two claimers or the kill
switch do; the records reconciled with the broker before any intent, intents waiting while the
broker's state is unknown."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alpaca_trading_server import AlpacaTradingServer, Fault
from execution_support import alpaca_settings, armed_lab, intent, wait_for

from tradeos_lab import operator
from tradeos_lab.brokers import AlpacaBroker
from tradeos_lab.contracts import FillMessage, Message, OrderMessage, RiskEventMessage
from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.execution import Execution, client_order_id_for
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import KillSource

ORDERS = "/v2/orders"
BY_CID = "/v2/orders:by_client_order_id"


@pytest.fixture
def settings(server_settings: Settings, alpaca_server: AlpacaTradingServer) -> Settings:
    return alpaca_settings(server_settings, alpaca_server)


@pytest.fixture
def lab(settings: Settings) -> Iterator[Lab]:
    lab = armed_lab(settings)
    yield lab
    lab.close()


@pytest.fixture
def executions(lab: Lab, settings: Settings) -> Iterator[list[Execution]]:
    """Execution services of this test (each its own broker connection), closed at the end."""
    made: list[Execution] = []
    yield made
    for service in made:
        service.close()


@pytest.fixture
def execution(lab: Lab, settings: Settings, executions: list[Execution]) -> Execution:
    service = Execution(ServiceContext(lab=lab, settings=settings, instance="t"))
    executions.append(service)
    return service


def _of(kind: type[Message], out: object) -> list[Message]:
    return [m for m in out if isinstance(m, kind)]  # type: ignore[attr-defined]


def _updates_until(execution: Execution, done: object, what: str) -> list[Message]:
    """Execution's broker-updates timer fired until `done()` holds; what it emitted."""
    out: list[Message] = []

    def fired() -> bool:
        out.extend(execution.updates())
        return bool(done())  # type: ignore[operator]

    wait_for(fired, 30, what=what)
    return out


def test_the_settings_choose_alpaca_and_an_order_goes_there(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    message = intent()
    out = execution.handle(message)
    assert isinstance(execution.broker, AlpacaBroker)
    cid = client_order_id_for(message.message_id)
    (order,) = _of(OrderMessage, out)
    assert order.payload.status.value == "accepted"  # type: ignore[attr-defined]
    at_venue = alpaca_server.order_of(cid)
    assert order.payload.broker_order_id == at_venue["id"]  # type: ignore[attr-defined]
    held = lab.records.order(cid)
    assert (held.broker, held.status, held.intent_id) == ("alpaca", "accepted", message.message_id)
    assert not held.external


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503, after_effect=True),
        Fault(reset=True, after_effect=True),
        Fault(delay=3.0, after_effect=True),  # past the 2 s timeout: the answer never comes
        Fault(status=503),  # not placed: the lookup says so, then it is sent again
    ],
    ids=["5xx-after-accepting", "reset-after-accepting", "timeout-after-accepting", "5xx-before"],
)
def test_a_submit_whose_outcome_is_unknown_is_looked_up_before_any_resend(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer, fault: Fault
) -> None:
    alpaca_server.inject("POST", ORDERS, fault)
    message = intent()
    out = execution.handle(message)
    cid = client_order_id_for(message.message_id)
    assert [o["client_order_id"] for o in alpaca_server.orders.values()] == [cid]
    posts = alpaca_server.requests("POST", ORDERS)
    lookups = alpaca_server.requests("GET", BY_CID)
    assert lookups, "the unknown outcome was looked up"

    def at(seen: object) -> int:
        return next(i for i, s in enumerate(alpaca_server.seen) if s is seen)

    first_lookup = at(lookups[0])
    assert at(posts[0]) < first_lookup
    if fault.after_effect:
        assert len(posts) == 1, "accepted: never sent again"
    else:
        assert len(posts) == 2, "answered 404 by the lookup: sent once more"
        assert at(posts[1]) > first_lookup
    (order,) = _of(OrderMessage, out)
    assert order.payload.broker_order_id == alpaca_server.order_of(cid)["id"]  # type: ignore[attr-defined]
    assert lab.records.order(cid).status == "accepted"


def test_a_fill_after_the_answer_is_recorded_once_with_a_trade_and_a_fill_message(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    message = intent(quantity=3.0)
    execution.handle(message)
    cid = client_order_id_for(message.message_id)
    alpaca_server.fill(cid, 1.0, 190.0)
    out = _updates_until(
        execution, lambda: lab.records.order(cid).filled_quantity == 1.0, "the first fill"
    )
    alpaca_server.fill(cid, 2.0, 191.0)
    out += _updates_until(
        execution, lambda: lab.records.order(cid).status == "filled", "the second fill"
    )
    execution.updates()  # nothing new: nothing recorded again
    fills = lab.records.fills(cid)
    assert sorted(f.quantity for f in fills) == [1.0, 2.0]
    assert sum(f.quantity * f.price for f in fills) == pytest.approx(190.0 + 2 * 191.0)
    assert not any(f.external for f in fills)
    trades = lab.records.attribution(correlation_id=message.correlation_id)
    assert sorted(t.trade.execution_id for t in trades) == sorted(f.execution_id for f in fills)
    assert all(t.trade.intent_id == message.message_id for t in trades)
    fill_messages = _of(FillMessage, out)
    assert {m.payload.execution_id for m in fill_messages} == {f.execution_id for f in fills}  # type: ignore[attr-defined]
    assert all(m.causation_id == message.message_id for m in fill_messages)
    assert lab.records.net_quantity("manual_test", "AAPL") == 3.0


def test_the_same_intent_delivered_to_two_claimers_racing_makes_one_order_and_one_trade(
    lab: Lab, settings: Settings, alpaca_server: AlpacaTradingServer, executions: list[Execution]
) -> None:
    first, second = (
        Execution(ServiceContext(lab=lab, settings=settings, instance=name)) for name in ("a", "b")
    )
    executions.extend((first, second))
    message = intent(quantity=2.0)
    start = threading.Barrier(2)
    answers: dict[str, list[Message]] = {}
    errors: list[BaseException] = []

    def claim(service: Execution) -> None:
        try:
            start.wait()
            answers[service.ctx.instance] = list(service.handle(message))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=claim, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    cid = client_order_id_for(message.message_id)
    assert len(alpaca_server.orders) == 1
    ids = {_of(OrderMessage, a)[0].payload.broker_order_id for a in answers.values()}  # type: ignore[attr-defined]
    assert ids == {alpaca_server.order_of(cid)["id"]}
    alpaca_server.fill(cid, 2.0, 101.0)
    for service in (first, second):
        _updates_until(service, lambda: lab.records.order(cid).status == "filled", "filled")
        service.updates()
    assert len(lab.records.fills(cid)) == 1
    assert len(lab.records.attribution(correlation_id=message.correlation_id)) == 1
    assert lab.records.net_quantity("manual_test", "AAPL") == 2.0


def test_kill_switch_with_orders_in_flight_stops_new_submits_and_lets_cancels_out(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    working = intent(quantity=5.0, order_type="limit", limit_price=150.0)
    execution.handle(working)
    lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    refused = [execution.handle(intent(quantity=q)) for q in (1.0, 2.0)]
    assert len(alpaca_server.requests("POST", ORDERS)) == 1, "nothing new after the switch"
    for out in refused:
        (order,) = _of(OrderMessage, out)
        assert order.payload.status.value == "rejected"  # type: ignore[attr-defined]
        assert "kill switch" in order.payload.reason  # type: ignore[attr-defined]
        assert _of(RiskEventMessage, out)

    (canceled,) = operator.cancel_all(
        lab, [execution.broker], actor="user:test", reason="drill: flatten"
    )
    cid = client_order_id_for(working.message_id)
    assert canceled.client_order_ids == (cid,)
    assert alpaca_server.requests("DELETE", ORDERS), "the cancel went out while halted"
    assert alpaca_server.order_of(cid)["status"] == "canceled"
    _updates_until(
        execution, lambda: lab.records.order(cid).status == "canceled", "the cancel recorded"
    )
    assert len(alpaca_server.requests("POST", ORDERS)) == 1


def test_at_start_orders_the_records_miss_are_imported_and_a_position_mismatch_halts(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    # Placed at Alpaca by someone else and filled; and a position no order explains.
    status, placed = alpaca_server.route(
        "POST",
        ORDERS,
        {},
        {"symbol": "AAPL", "qty": "4", "side": "buy", "type": "market", "time_in_force": "day"},
    )
    assert status == 200
    alpaca_server.fill(placed["client_order_id"], 4.0, 100.0)
    alpaca_server.positions["MSFT"] = 7.0

    message = intent(symbol="AAPL", quantity=1.0)
    execution.handle(message)  # reconciled first, then placed

    imported = lab.records.order(placed["client_order_id"])
    assert imported.external and imported.status == "filled"
    assert [f.quantity for f in lab.records.fills(imported.client_order_id)] == [4.0]
    halts = [
        s
        for s in lab.kill_switches.state().switches
        if s.source is KillSource.RECONCILIATION and s.target == "MSFT"
    ]
    assert [h.mode.value for h in halts] == ["REDUCING"]
    events = [e for e in lab.records.risk_events() if e.kind == "reconciliation"]
    assert "symbol:MSFT" in {e.scope for e in events}
    assert len(alpaca_server.orders) == 2  # theirs and this intent's


def test_intents_wait_while_the_brokers_state_is_unknown(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    alpaca_server.inject("GET", "/v2/positions", Fault(status=401))  # no usable report
    message = intent()
    with pytest.raises(DependencyUnavailable, match="intents wait"):
        execution.handle(message)
    assert alpaca_server.requests("POST", ORDERS) == []
    cid = client_order_id_for(message.message_id)
    assert lab.records.find_order(cid) is None
    assert not execution.broker_state_known
    # The broker reports again: the same intent, retried in place, goes through once.
    execution.handle(message)
    assert execution.broker_state_known
    assert [o["client_order_id"] for o in alpaca_server.orders.values()] == [cid]


def test_the_reconcile_timer_finds_a_broker_that_stopped_reporting(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    assert [t.name for t in execution.timers()] == ["reconcile", "broker-updates"]
    execution.reconcile()
    assert execution.broker_state_known
    alpaca_server.inject("GET", "/v2/positions", Fault(status=401))
    messages = execution.reconcile()
    assert not execution.broker_state_known
    assert [m.payload.kind.value for m in _of(RiskEventMessage, messages)] == ["reconciliation"]  # type: ignore[attr-defined]
    alpaca_server.inject("GET", "/v2/positions", Fault(status=401))  # still not reporting
    with pytest.raises(DependencyUnavailable):
        execution.handle(intent())
    assert alpaca_server.requests("POST", ORDERS) == []


def test_through_the_runner_an_intent_waits_unacked_until_the_broker_reports(
    lab: Lab, settings: Settings, alpaca_server: AlpacaTradingServer
) -> None:
    from tradeos_lab.keys import Stream
    from tradeos_lab.pipeline.runner import ServiceRunner

    unreported = 3
    alpaca_server.inject("GET", "/v2/positions", *[Fault(status=401)] * unreported)
    message = intent()
    lab.bus.publish(Stream.INTENTS, message)
    runner = ServiceRunner(Execution, ServiceContext(lab=lab, settings=settings, instance="t"))
    running = runner.run_in_thread()
    try:
        wait_for(
            lambda: lab.bus.redis.xlen(lab.keys.stream(Stream.ORDERS)) == 1,
            60,
            what="the order once the broker reported",
        )
        wait_for(
            lambda: lab.bus.inspect.group_info(Stream.INTENTS, "execution").pending == 0,
            30,
            what="the intent acked",
        )
    finally:
        running.stop()
    positions = alpaca_server.requests("GET", "/v2/positions")
    (post,) = alpaca_server.requests("POST", ORDERS)
    order_of_requests = [id(s) for s in alpaca_server.seen]
    assert len(positions) > unreported
    assert order_of_requests.index(id(post)) > order_of_requests.index(id(positions[unreported]))
    assert [o["client_order_id"] for o in alpaca_server.orders.values()] == [
        client_order_id_for(message.message_id)
    ]
    assert lab.bus.inspect.dead_letters(Stream.INTENTS).empty
    unknown = [e for e in lab.records.risk_events() if e.scope == "broker:alpaca"]
    assert len(unknown) >= unreported, "each unanswered reconciliation is a risk event"


def test_an_order_sent_before_the_kill_switch_whose_answer_was_lost_is_not_denied_after_it(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    execution.handle(intent(symbol="MSFT"))  # the broker's state known, one order placed
    message = intent(quantity=2.0)
    cid = client_order_id_for(message.message_id)
    # Recorded and sent; Alpaca accepted it, its answer was lost (the intent retried in place).
    lab.records.record_intent(message)  # type: ignore[arg-type]
    payload = message.payload
    lab.records.record_order(
        client_order_id=cid,
        symbol="AAPL",
        side="buy",
        quantity=2.0,
        time_in_force="day",
        strategy=payload.strategy,  # type: ignore[attr-defined]
        broker="alpaca",
        intent_id=message.message_id,
        correlation_id=message.correlation_id,
    )
    body = {"symbol": "AAPL", "qty": "2", "side": "buy", "type": "market", "time_in_force": "day"}
    assert alpaca_server.route("POST", ORDERS, {}, {**body, "client_order_id": cid})[0] == 200
    lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    out = execution.handle(message)
    (order,) = _of(OrderMessage, out)
    assert order.payload.status.value == "accepted"  # type: ignore[attr-defined]
    assert order.payload.broker_order_id == alpaca_server.order_of(cid)["id"]  # type: ignore[attr-defined]
    assert lab.records.order(cid).status == "accepted"
    assert len(alpaca_server.requests("POST", ORDERS)) == 1, "nothing sent after the switch"


def test_the_broker_circuit_opening_and_closing_are_risk_events_and_a_probe_reopens_trading(
    execution: Execution, lab: Lab, alpaca_server: AlpacaTradingServer
) -> None:
    from tradeos_lab.keys import Stream
    from tradeos_lab.pipeline.services.feasibility import BROKER_DEPENDENCY, broker_circuit
    from tradeos_lab.tiers.flags import BreakerState

    execution.handle(intent(symbol="MSFT"))  # the broker's state known
    pipeline_breaker = lab.flags.circuit_breaker(BROKER_DEPENDENCY)
    for _ in range(4):
        pipeline_breaker.record_failure()
    # Alpaca's own breaker open: the submit fails at once, the pipeline's fifth failure opens it.
    alpaca_breaker = lab.flags.circuit_breaker("alpaca")
    for _ in range(5):
        alpaca_breaker.record_failure()
    failing = intent()
    with pytest.raises(DependencyUnavailable):
        execution.handle(failing)

    def breaker_events() -> list[Message]:
        entries = lab.bus.redis.xrange(lab.keys.stream(Stream.RISK_EVENTS))
        messages = [lab.bus.decode(Stream.RISK_EVENTS, fields) for _, fields in entries]
        return [m for m in messages if m.payload.kind.value == "circuit_breaker"]  # type: ignore[attr-defined]

    (opened,) = breaker_events()
    assert (opened.payload.severity.value, opened.payload.scope) == ("critical", "broker:alpaca")  # type: ignore[attr-defined]
    assert "opened after 5 failures" in opened.payload.detail  # type: ignore[attr-defined]
    assert broker_circuit(lab) is BreakerState.OPEN, "Feasibility holds orders in the cooldown"
    # The cooldown over (moved back on the breaker itself), Feasibility's read lets one probe out.
    lab.flags.redis.hset(lab.keys.circuit(BROKER_DEPENDENCY), "opened_at", "1")
    lab.flags.redis.delete(lab.keys.circuit("alpaca"))
    assert broker_circuit(lab) is BreakerState.HALF_OPEN
    assert broker_circuit(lab) is BreakerState.OPEN, "one probe at a time"
    execution.handle(failing)  # the probe goes through: the circuit closes
    assert pipeline_breaker.status().state is BreakerState.CLOSED
    opened_again, closed = breaker_events()
    assert opened_again.message_id == opened.message_id
    assert (closed.payload.severity.value, closed.payload.scope) == ("info", "broker:alpaca")  # type: ignore[attr-defined]
    assert broker_circuit(lab) is BreakerState.CLOSED
