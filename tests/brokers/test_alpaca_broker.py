"""The Alpaca paper broker through alpaca-py against a local server answering like Alpaca's
trading API: orders, account, positions, faults, the flags tier's limit and breaker on real
Redis, and trade updates over a local websocket with REST polling as the backstop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from alpaca_trading_server import API_KEY, SECRET_KEY, AlpacaTradingServer, Fault

from tradeos_lab.brokers import AlpacaBroker, Broker, OrderReport, OrderRequest
from tradeos_lab.brokers.alpaca import AlpacaTradeUpdates, default_stream_url
from tradeos_lab.contracts import OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.errors import (
    CircuitOpen,
    ConfigError,
    DependencyUnavailable,
    OrderNotFound,
    ProviderError,
    RateLimited,
    ValidationError,
)
from tradeos_lab.providers.alpaca import symbol_from_alpaca
from tradeos_lab.retry import RetryPolicy
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import BreakerState, Flags

ORDERS = "/v2/orders"
BY_CID = "/v2/orders:by_client_order_id"


class Sleeps:
    """The retry policy's sleep: records each wait and waits a token time (or, `real`, the whole
    wait), so a test knows what was waited for without waiting it."""

    def __init__(self, *, real: bool = False) -> None:
        self.waits: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds if self.real else 0.001)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_broker(
    alpaca_server: AlpacaTradingServer, flags: Flags, sleeps: Sleeps
) -> Callable[..., AlpacaBroker]:
    """An Alpaca broker on the local server; keyword arguments override its options."""

    def make(**overrides: Any) -> AlpacaBroker:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "secret_key": SECRET_KEY,
            "url": alpaca_server.url,
            "stream_url": alpaca_server.stream_url,
            "timeout": 5.0,
            "retry": RetryPolicy(attempts=3, base=0.01, cap=0.05, sleep=sleeps),
        }
        options.update(overrides)
        return AlpacaBroker(flags, **options)

    return make


@pytest.fixture
def broker(make_broker: Callable[..., AlpacaBroker]) -> AlpacaBroker:
    return make_broker()


def market(
    cid: str, symbol: str = "AAPL", quantity: float = 10, side: Side = Side.BUY
) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=quantity)


def wait_for(
    feed: AlpacaTradeUpdates, found: Callable[[list[OrderReport]], bool], within: float = 20.0
) -> list[OrderReport]:
    """Reports from `feed` until `found` holds of all read so far (a condition, not a timing)."""
    seen: list[OrderReport] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen.extend(feed.reports(timeout=0.1))
        if found(seen):
            return seen
    raise AssertionError(f"condition not met; reports: {seen}")


def wait_until(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.02)


# ---- orders -------------------------------------------------------------------------------


def test_the_alpaca_broker_meets_the_broker_protocol(broker: AlpacaBroker) -> None:
    chosen: Broker = broker
    assert chosen.name == "alpaca"


def test_a_market_order_goes_out_with_alpacas_symbol_and_comes_back_canonical(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    report = broker.submit(
        OrderRequest(
            client_order_id="tl-1",
            symbol="BTC-USD",
            side=Side.BUY,
            quantity=0.5,
            time_in_force=TimeInForce.GTC,
        )
    )
    [sent] = alpaca_server.requests("POST", ORDERS)
    assert sent.body["symbol"] == "BTC/USD"
    assert sent.body["client_order_id"] == "tl-1"
    assert sent.body["type"] == "market"
    assert sent.body["time_in_force"] == "gtc"
    assert float(sent.body["qty"]) == 0.5
    order = report.order
    assert order.symbol == "BTC-USD"
    assert order.status is OrderStatus.ACCEPTED
    assert order.broker_order_id == alpaca_server.order_of("tl-1")["id"]
    assert order.quantity == 0.5 and order.filled_quantity == 0
    assert report.fills == ()


def test_a_limit_order_carries_its_price_and_time_in_force(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    report = broker.submit(
        OrderRequest(
            client_order_id="tl-limit",
            symbol="MSFT",
            side=Side.SELL,
            quantity=3,
            order_type=OrderType.LIMIT,
            limit_price=412.5,
            time_in_force=TimeInForce.IOC,
        )
    )
    [sent] = alpaca_server.requests("POST", ORDERS)
    assert sent.body["type"] == "limit"
    assert float(sent.body["limit_price"]) == 412.5
    assert sent.body["time_in_force"] == "ioc"
    assert sent.body["side"] == "sell"
    assert report.order.order_type is OrderType.LIMIT
    assert report.order.limit_price == 412.5
    assert report.order.time_in_force is TimeInForce.IOC


def test_submitting_a_client_order_id_twice_places_one_order(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    first = broker.submit(market("tl-twice"))
    alpaca_server.fill("tl-twice", 10, 101.0)
    second = broker.submit(market("tl-twice"))
    assert len(alpaca_server.orders) == 1
    assert second.order.broker_order_id == first.order.broker_order_id
    assert second.order.status is OrderStatus.FILLED  # the order as it stands now


def test_bad_orders_raise_or_come_back_rejected_with_the_reason(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    with pytest.raises(ValidationError, match="quantity"):
        broker.submit(market("tl-zero", quantity=0))
    with pytest.raises(ValidationError, match="limit price"):
        broker.submit(
            OrderRequest(
                client_order_id="tl-nolimit",
                symbol="AAPL",
                side=Side.BUY,
                quantity=1,
                order_type=OrderType.LIMIT,
            )
        )
    stop = broker.submit(
        OrderRequest(
            client_order_id="tl-stop",
            symbol="AAPL",
            side=Side.BUY,
            quantity=1,
            order_type=OrderType.STOP,
            stop_price=90,
        )
    )
    assert stop.order.status is OrderStatus.REJECTED and "market and limit" in (
        stop.order.reason or ""
    )
    unknown = broker.submit(market("tl-unknown", symbol="ZZZZ"))
    assert unknown.order.status is OrderStatus.REJECTED
    assert "asset" in (unknown.order.reason or "") and "422" in (unknown.order.reason or "")
    poor = broker.submit(market("tl-poor", quantity=1_000_000))
    assert poor.order.status is OrderStatus.REJECTED
    assert "insufficient buying power" in (poor.order.reason or "")
    assert poor.order.broker_order_id is None
    assert alpaca_server.orders == {}
    assert len(alpaca_server.requests("POST", ORDERS)) == 2  # the malformed ones never left


def test_get_order_derives_one_fill_per_step_of_the_cumulative_quantity(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    assert broker.get_order("tl-never") is None
    placed = broker.submit(market("tl-steps"))
    oid = placed.order.broker_order_id
    alpaca_server.fill("tl-steps", 4, 100.0)
    partial = broker.get_order("tl-steps")
    assert partial is not None
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    alpaca_server.fill("tl-steps", 6, 110.0)
    done = broker.get_order("tl-steps")
    assert done is not None and done.order.status is OrderStatus.FILLED
    assert [(f.execution_id, f.quantity) for f in done.fills] == [(f"{oid}:4", 4), (f"{oid}:10", 6)]
    assert done.fills[0].price == pytest.approx(100.0)
    assert done.fills[1].price == pytest.approx(110.0)
    assert done.order.avg_price == pytest.approx(106.0)
    assert {f.symbol for f in done.fills} == {"AAPL"}


def test_fills_the_caller_already_holds_are_not_derived_again(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    first = make_broker()
    oid = first.submit(market("tl-held")).order.broker_order_id
    alpaca_server.fill("tl-held", 4, 100.0)
    assert first.get_order("tl-held") is not None
    alpaca_server.fill("tl-held", 6, 110.0)
    # A restarted process whose records hold the first fill (4 at 100).
    restarted = make_broker(filled_so_far=lambda cid: (4.0, 400.0) if cid == "tl-held" else (0, 0))
    report = restarted.get_order("tl-held")
    assert report is not None
    assert [(f.execution_id, f.quantity) for f in report.fills] == [(f"{oid}:10", 6)]
    assert report.fills[0].price == pytest.approx(110.0)


def test_cancel_cancels_a_working_order_and_leaves_a_finished_one(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    broker.submit(market("tl-open"))
    broker.submit(market("tl-done"))
    alpaca_server.fill("tl-done", 10, 100.0)
    assert broker.cancel("tl-open").status is OrderStatus.CANCELED
    assert broker.cancel("tl-done").status is OrderStatus.FILLED
    assert alpaca_server.order_of("tl-done")["status"] == "filled"
    assert len(alpaca_server.requests("DELETE", ORDERS)) == 1
    with pytest.raises(OrderNotFound):
        broker.cancel("tl-never")


def test_cancel_all_cancels_every_working_order(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    for cid in ("tl-a", "tl-b", "tl-c"):
        broker.submit(market(cid, quantity=1))
    alpaca_server.fill("tl-c", 1, 100.0)
    canceled = broker.cancel_all()
    assert sorted(o.client_order_id for o in canceled) == ["tl-a", "tl-b"]
    assert {o.status for o in canceled} == {OrderStatus.CANCELED}
    assert alpaca_server.order_of("tl-c")["status"] == "filled"
    assert broker.cancel_all() == []


def test_account_and_positions_are_signed_and_canonical(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    broker.submit(market("tl-aapl", quantity=10))
    broker.submit(market("tl-btc", symbol="BTC-USD", quantity=0.5))
    broker.submit(market("tl-msft", symbol="MSFT", quantity=2, side=Side.SELL))
    alpaca_server.fill("tl-aapl", 10, 100.0)
    alpaca_server.fill("tl-btc", 0.5, 40_000.0)
    alpaca_server.fill("tl-msft", 2, 300.0)
    assert broker.positions() == {"AAPL": 10.0, "BTC-USD": 0.5, "MSFT": -2.0}
    account = broker.account()
    cash = 100_000 - 1_000 - 20_000 + 600
    assert account.cash == pytest.approx(cash)
    assert account.equity == pytest.approx(cash + 1_000 + 20_000 - 600)
    assert account.positions == {"AAPL": 10.0, "BTC-USD": 0.5, "MSFT": -2.0}
    assert account.currency == "USD"


def test_symbols_from_alpaca_are_canonical() -> None:
    assert symbol_from_alpaca("BTC/USD") == "BTC-USD"
    assert symbol_from_alpaca("BTCUSD", "crypto") == "BTC-USD"
    assert symbol_from_alpaca("ETHUSDT", "crypto") == "ETH-USDT"
    assert symbol_from_alpaca("AAPL", "us_equity") == "AAPL"
    assert symbol_from_alpaca("BRK.B", "us_equity") == "BRK.B"


# ---- an unknown outcome is looked up, never resent blindly ---------------------------------


@pytest.mark.parametrize(
    ("fault", "posts"),
    [
        pytest.param(Fault(delay=2.5), 2, id="timeout-before-accept"),
        pytest.param(Fault(delay=2.5, after_effect=True), 1, id="timeout-after-accept"),
        pytest.param(Fault(status=503), 2, id="503-before-accept"),
        pytest.param(Fault(status=500, after_effect=True), 1, id="500-after-accept"),
        pytest.param(Fault(reset=True), 2, id="reset-before-accept"),
        pytest.param(Fault(reset=True, after_effect=True), 1, id="reset-after-accept"),
    ],
)
def test_a_submit_with_an_unknown_outcome_ends_with_exactly_one_order(
    make_broker: Callable[..., AlpacaBroker],
    alpaca_server: AlpacaTradingServer,
    fault: Fault,
    posts: int,
) -> None:
    broker = make_broker(timeout=1.0)
    alpaca_server.inject("POST", ORDERS, fault)
    report = broker.submit(market("tl-unknown-outcome"))
    assert len(alpaca_server.orders) == 1
    assert report.order.broker_order_id == alpaca_server.order_of("tl-unknown-outcome")["id"]
    assert report.order.status is OrderStatus.ACCEPTED
    # Looked up before any second POST; a second POST only after Alpaca answered 404.
    assert len(alpaca_server.requests("GET", BY_CID)) == 1
    assert len(alpaca_server.requests("POST", ORDERS)) == posts
    order = [(s.method, s.path) for s in alpaca_server.seen]
    assert order[:2] == [("POST", ORDERS), ("GET", BY_CID)]


def test_when_the_lookup_fails_too_the_order_is_not_sent_again_until_alpaca_answers(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    broker = make_broker()
    alpaca_server.inject("POST", ORDERS, Fault(reset=True, after_effect=True))
    alpaca_server.inject("GET", BY_CID, *[Fault(status=503)] * 3)
    with pytest.raises(DependencyUnavailable, match="outcome is unknown"):
        broker.submit(market("tl-lost"))
    assert len(alpaca_server.requests("POST", ORDERS)) == 1
    assert len(alpaca_server.orders) == 1
    # Asked again (the intent redelivered): looked up first, found, not sent.
    report = broker.submit(market("tl-lost"))
    assert report.order.broker_order_id == alpaca_server.order_of("tl-lost")["id"]
    assert len(alpaca_server.requests("POST", ORDERS)) == 1


def test_a_429_is_resent_after_its_retry_after(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer, sleeps: Sleeps
) -> None:
    alpaca_server.inject(
        "POST",
        ORDERS,
        Fault(
            status=429, json_body={"message": "rate limit exceeded"}, headers={"Retry-After": "7"}
        ),
    )
    report = broker.submit(market("tl-429"))
    assert report.order.status is OrderStatus.ACCEPTED
    assert sleeps.waits == [7.0]
    assert len(alpaca_server.requests("POST", ORDERS)) == 2
    assert len(alpaca_server.orders) == 1
    # Reads honour it too.
    alpaca_server.inject(
        "GET",
        BY_CID,
        Fault(status=429, json_body={"message": "slow"}, headers={"Retry-After": "3"}),
    )
    assert broker.get_order("tl-429") is not None
    assert sleeps.waits == [7.0, 3.0]


def test_a_429_asking_for_longer_than_we_wait_fails_fast(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    alpaca_server.inject(
        "POST",
        ORDERS,
        Fault(status=429, json_body={"message": "no"}, headers={"Retry-After": "600"}),
    )
    with pytest.raises(RateLimited, match="600"):
        broker.submit(market("tl-429-long"))
    assert alpaca_server.orders == {}


def test_reads_are_retried_through_5xx_and_timeouts(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    broker = make_broker(timeout=1.0)
    alpaca_server.inject("GET", "/v2/account", Fault(status=502), Fault(delay=2.5))
    assert broker.account().cash == pytest.approx(100_000)
    assert len(alpaca_server.requests("GET", "/v2/account")) == 3


def test_errors_become_the_projects_typed_errors(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    with pytest.raises(ConfigError, match="alpaca_api_key"):
        make_broker(api_key=None)
    wrong = make_broker(secret_key="not-the-secret-key")
    with pytest.raises(ProviderError, match="401"):
        wrong.positions()
    broker = make_broker()
    alpaca_server.inject("GET", "/v2/positions", Fault(status=200, json_body=[{"qty": "1"}]))
    with pytest.raises(ProviderError, match="unexpected shape"):
        broker.positions()
    alpaca_server.inject("GET", "/v2/positions", *[Fault(status=503)] * 3)
    with pytest.raises(DependencyUnavailable):
        broker.positions()


def test_keys_never_reach_the_logs_or_the_repr(
    make_broker: Callable[..., AlpacaBroker],
    alpaca_server: AlpacaTradingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker()
    alpaca_server.inject("POST", ORDERS, Fault(status=503))
    broker.submit(market("tl-logged"))
    with pytest.raises(ProviderError):
        make_broker(secret_key=SECRET_KEY + "x").account()
    assert caplog.records  # the retry was logged
    for secret in (API_KEY, SECRET_KEY):
        assert secret not in caplog.text
        assert secret not in repr(broker)


# ---- the flags tier: rate limit and circuit breaker on real Redis -------------------------


def test_every_request_takes_a_slot_of_the_shared_rate_limit(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    quick = RetryPolicy(attempts=1, max_retry_after=0.0)
    one = make_broker(rate_limit_per_minute=3, retry=quick)
    other = make_broker(rate_limit_per_minute=3, retry=quick)  # another process, same account
    one.positions()
    other.positions()
    one.submit(market("tl-rate"))
    with pytest.raises(RateLimited, match="3 a minute"):
        other.positions()
    with pytest.raises(RateLimited):
        one.submit(market("tl-rate-2"))
    assert len(alpaca_server.seen) == 3  # refused before any request


def test_a_rate_limit_wait_within_bounds_is_waited_out(
    flags: Flags, make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    sleeps = Sleeps(real=True)
    broker = make_broker(
        limiter=flags.rate_limiter("alpaca", limit=2, window_seconds=0.3),
        retry=RetryPolicy(attempts=1, max_retry_after=5.0, sleep=sleeps),
    )
    for _ in range(3):
        assert broker.positions() == {}
    assert sleeps.waits  # the third request waited for a slot, then went
    assert len(alpaca_server.seen) == 3


def test_repeated_failures_open_the_circuit_and_calls_stop_reaching_alpaca(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    alpaca_server.inject("GET", "/v2/positions", *[Fault(status=503)] * 10)
    with pytest.raises(DependencyUnavailable):
        broker.positions()  # 3 failures
    assert broker.circuit().state is BreakerState.CLOSED
    with pytest.raises(DependencyUnavailable):
        broker.positions()  # 2 more: the fifth opens it
    assert broker.circuit().state is BreakerState.OPEN
    reached = len(alpaca_server.seen)
    with pytest.raises(CircuitOpen) as refused:
        broker.submit(market("tl-breaker"))
    assert refused.value.dependency == "alpaca"
    assert len(alpaca_server.seen) == reached  # refused before any request
    assert alpaca_server.orders == {}


def test_after_the_cooldown_an_answered_probe_closes_the_circuit(
    flags: Flags, make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    breaker = flags.circuit_breaker(
        "alpaca", failure_threshold=1, cooldown_seconds=0.05, probe_timeout_seconds=5
    )
    broker = make_broker(breaker=breaker, retry=RetryPolicy(attempts=1))
    alpaca_server.inject("GET", "/v2/positions", Fault(status=503))
    with pytest.raises(DependencyUnavailable):
        broker.positions()
    assert broker.circuit().state is BreakerState.OPEN
    wait_until(lambda: broker.circuit().opened_at_ms + 50 <= _server_ms(flags))
    assert broker.positions() == {}  # the probe, answered
    assert broker.circuit().state is BreakerState.CLOSED


def _server_ms(flags: Flags) -> int:
    sec, usec = flags.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


# ---- trade updates: the websocket, REST polling as its backstop ----------------------------


def _fills(reports: list[OrderReport]) -> list[tuple[str, float]]:
    return [(f.execution_id, f.quantity) for r in reports for f in r.fills]


def test_trade_updates_arrive_over_the_stream(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    feed = broker.trade_updates(poll_interval_s=3600)
    with feed:
        wait_until(lambda: feed.connected and alpaca_server.listening == 1)
        feed.reports()  # the catch-up poll after connecting
        polls = feed.polls
        oid = broker.submit(market("tl-stream")).order.broker_order_id
        alpaca_server.fill("tl-stream", 4, 100.0)
        alpaca_server.fill("tl-stream", 6, 110.0)
        seen = wait_for(feed, lambda r: any(x.order.status is OrderStatus.FILLED for x in r))
        assert feed.polls == polls  # nothing polled while the stream was up
    assert _fills(seen) == [(f"{oid}:4", 4), (f"{oid}:10", 6)]
    assert seen[-1].order.filled_quantity == 10
    assert not feed.connected


def test_an_unreadable_update_is_skipped_and_the_order_read_by_a_poll(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer, caplog: pytest.LogCaptureFixture
) -> None:
    feed = broker.trade_updates(poll_interval_s=3600)
    with feed:
        wait_until(lambda: feed.connected and alpaca_server.listening == 1)
        oid = broker.submit(market("tl-garbled")).order.broker_order_id
        feed.reports()
        polls = feed.polls
        alpaca_server.fill("tl-garbled", 10, 100.0, publish=False)  # its update is garbled:
        with caplog.at_level(logging.WARNING):
            alpaca_server.publish({"event": "fill", "order": {"id": oid, "status": "filled"}})
            seen = wait_for(feed, lambda r: bool(_fills(r)))
    assert "skipped" in caplog.text
    assert feed.polls == polls + 1
    assert _fills(seen) == [(f"{oid}:10", 10)]


def test_a_dropped_stream_falls_back_to_polling_and_no_fill_is_reported_twice(
    make_broker: Callable[..., AlpacaBroker], alpaca_server: AlpacaTradingServer
) -> None:
    broker = make_broker()
    feed = AlpacaTradeUpdates(broker, poll_interval_s=0.05, reconnect_min_s=0.05)
    with feed:
        wait_until(lambda: feed.connected and alpaca_server.listening == 1)
        oid = broker.submit(market("tl-drop", quantity=30)).order.broker_order_id
        alpaca_server.fill("tl-drop", 10, 100.0)
        seen = wait_for(feed, lambda r: len(_fills(r)) == 1)
        # The stream drops and stays down: fills are found by polling.
        alpaca_server.refuse_streams = True
        alpaca_server.drop_streams()
        wait_until(lambda: not feed.connected)
        polls = feed.polls
        alpaca_server.fill("tl-drop", 10, 110.0)
        seen += wait_for(feed, lambda r: len(_fills(r)) == 1)
        assert feed.polls > polls
        # A fill made while the stream comes back is found by a poll or by the catch-up poll
        # after it reconnects (the stream does not replay it), and reported once.
        alpaca_server.fill("tl-drop", 5, 120.0)
        alpaca_server.refuse_streams = False
        seen += wait_for(feed, lambda r: len(_fills(r)) == 1)
        wait_until(lambda: feed.connected)
        alpaca_server.fill("tl-drop", 5, 130.0)
        seen += wait_for(feed, lambda r: any(x.order.status is OrderStatus.FILLED for x in r))
        seen += feed.reports(timeout=0.2)
    fills = _fills(seen)
    assert fills == [(f"{oid}:10", 10), (f"{oid}:20", 10), (f"{oid}:25", 5), (f"{oid}:30", 5)]
    assert len({execution_id for execution_id, _ in fills}) == len(fills)
    assert sum(q for _, q in fills) == float(alpaca_server.order_of("tl-drop")["filled_qty"])


def test_polling_alone_reports_fills_and_orders_that_left_the_open_list(
    broker: AlpacaBroker, alpaca_server: AlpacaTradingServer
) -> None:
    feed = broker.trade_updates(poll_interval_s=0.01, stream=False)
    broker.submit(market("tl-poll-fill", quantity=2))
    broker.submit(market("tl-poll-cancel", quantity=2))
    first = wait_for(feed, lambda r: len(r) >= 2)
    assert {r.order.status for r in first} == {OrderStatus.ACCEPTED}
    alpaca_server.fill("tl-poll-fill", 2, 50.0)  # leaves the open list
    with alpaca_server._lock:
        alpaca_server._cancel(alpaca_server.order_of("tl-poll-cancel"))
    later = wait_for(feed, lambda r: len(r) >= 2)
    status = {r.order.client_order_id: r.order.status for r in later}
    assert status == {"tl-poll-fill": OrderStatus.FILLED, "tl-poll-cancel": OrderStatus.CANCELED}
    assert _fills(later) == [(f"{alpaca_server.order_of('tl-poll-fill')['id']}:2", 2)]
    assert feed.reports() == []  # nothing new: nothing reported


# ---- settings -----------------------------------------------------------------------------


def test_the_broker_is_built_from_the_settings(
    settings_factory: Callable[..., Settings], flags: Flags, alpaca_server: AlpacaTradingServer
) -> None:
    settings = settings_factory(
        alpaca_api_key=API_KEY,
        alpaca_secret_key=SECRET_KEY,
        alpaca_trading_url=alpaca_server.url,
        alpaca_rate_limit_per_minute=120,
        alpaca_timeout_seconds=3,
    )
    broker = AlpacaBroker.from_settings(settings, flags)
    assert broker.url == alpaca_server.url
    assert broker.stream_url == alpaca_server.url.replace("http://", "ws://") + "/stream"
    assert broker.limiter.limit == 120
    assert broker.timeout == 3
    assert broker.positions() == {}
    assert default_stream_url("https://paper-api.alpaca.markets") == (
        "wss://paper-api.alpaca.markets/stream"
    )
    with pytest.raises(ConfigError, match="alpaca_rate_limit_per_minute"):
        settings_factory(alpaca_rate_limit_per_minute=0)
