"""The paper broker on real records (PostgreSQL) and the real cache: fills against the latest
bars with slippage, fees, volume participation and time in force; idempotent by client order id;
its account is in the records, so a new broker object sees the same account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tradeos_lab.brokers import OrderRequest, PaperBroker, PaperConfig, cached_bar
from tradeos_lab.contracts import Bar, OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bar(lab: Lab, minute: int, close: float, volume: float = 1_000.0, day: int = 0) -> Bar:
    """Write a 1m bar of BTC-USD to the cache (as Ingestion does) and return it."""
    ts = T0 + timedelta(days=day, minutes=minute)
    values = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": volume}
    lab.cache.append_bar("BTC-USD", "1m", {**values, "ts": ts})
    return Bar(symbol="BTC-USD", timeframe="1m", ts=ts, source="test", **values)  # type: ignore[arg-type]


def _broker(lab: Lab, **config: float) -> PaperBroker:
    cfg = PaperConfig(**config)  # type: ignore[arg-type]
    return PaperBroker(lab.records, cached_bar(lab.cache, "1m"), config=cfg)


def _buy(cid: str, quantity: float = 2.0, **extra: object) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol="BTC-USD",
        side=Side.BUY,
        quantity=quantity,
        strategy="sma_cross",
        **extra,
    )  # type: ignore[arg-type]


def test_market_order_fills_at_the_latest_bar_close_with_slippage_and_fee(
    pipeline_lab: Lab,
) -> None:
    _bar(pipeline_lab, 0, 100.0)
    report = _broker(pipeline_lab, slippage_bps=10, fee_bps=20).submit(_buy("o-1"))
    assert report.order.status is OrderStatus.FILLED
    (fill,) = report.fills
    assert fill.price == pytest.approx(100.0 * 1.001)
    assert fill.fee == pytest.approx(2 * 100.1 * 0.002)
    assert pipeline_lab.records.order("o-1").avg_price == pytest.approx(100.1)


def test_participation_fills_part_of_a_bar_and_the_rest_on_following_bars(
    pipeline_lab: Lab,
) -> None:
    broker = _broker(pipeline_lab, participation=0.1)
    _bar(pipeline_lab, 0, 100.0, volume=10.0)
    first = broker.submit(_buy("o-2", quantity=2.5))
    assert first.order.status is OrderStatus.PARTIALLY_FILLED
    assert first.order.filled_quantity == pytest.approx(1.0)
    assert broker.advance(_bar(pipeline_lab, 0, 100.0, volume=10.0)) == []  # same bar: no refill
    second = broker.advance(_bar(pipeline_lab, 1, 101.0, volume=10.0))
    third = broker.advance(_bar(pipeline_lab, 2, 102.0, volume=10.0))
    assert [r.fills[0].quantity for r in (*second, *third)] == pytest.approx([1.0, 0.5])
    assert third[0].order.status is OrderStatus.FILLED
    assert [f.quantity for f in pipeline_lab.records.fills("o-2")] == pytest.approx([1, 1, 0.5])


def test_limit_order_rests_until_a_bar_trades_through_and_never_fills_worse(
    pipeline_lab: Lab,
) -> None:
    broker = _broker(pipeline_lab)
    _bar(pipeline_lab, 0, 100.0)
    placed = broker.submit(
        _buy("o-3", order_type=OrderType.LIMIT, limit_price=95.0, time_in_force=TimeInForce.GTC)
    )
    assert placed.order.status is OrderStatus.ACCEPTED and placed.fills == ()
    assert broker.advance(_bar(pipeline_lab, 1, 97.0)) == []  # low 96 > limit 95
    (report,) = broker.advance(_bar(pipeline_lab, 2, 95.5))  # low 94.5 trades through
    assert report.order.status is OrderStatus.FILLED
    assert report.fills[0].price == pytest.approx(95.0)


def test_ioc_cancels_what_the_first_bar_did_not_fill(pipeline_lab: Lab) -> None:
    _bar(pipeline_lab, 0, 100.0, volume=10.0)
    report = _broker(pipeline_lab, participation=0.1).submit(
        _buy("o-4", quantity=3, time_in_force=TimeInForce.IOC)
    )
    assert report.order.status is OrderStatus.CANCELED
    assert report.order.filled_quantity == pytest.approx(1.0)


def test_day_order_expires_on_a_bar_of_a_later_day(pipeline_lab: Lab) -> None:
    broker = _broker(pipeline_lab)
    _bar(pipeline_lab, 0, 100.0)
    broker.submit(_buy("o-5", order_type=OrderType.LIMIT, limit_price=50.0))
    (report,) = broker.advance(_bar(pipeline_lab, 0, 40.0, day=1))
    assert report.order.status is OrderStatus.EXPIRED and report.fills == ()


def test_stop_order_is_rejected_with_a_reason(pipeline_lab: Lab) -> None:
    _bar(pipeline_lab, 0, 100.0)
    report = _broker(pipeline_lab).submit(_buy("o-6", order_type=OrderType.STOP))
    assert report.order.status is OrderStatus.REJECTED
    assert "market and limit" in (report.order.reason or "")


def test_same_client_order_id_twice_places_one_order_and_answers_the_same(
    pipeline_lab: Lab,
) -> None:
    broker = _broker(pipeline_lab)
    _bar(pipeline_lab, 0, 100.0)
    first = broker.submit(_buy("o-7"))
    _bar(pipeline_lab, 1, 120.0)  # a new bar must not fill the repeat again
    again = broker.submit(_buy("o-7"))
    assert again == first
    assert len(pipeline_lab.records.fills("o-7")) == 1


def test_account_is_in_the_records_and_survives_a_new_broker_object(pipeline_lab: Lab) -> None:
    broker = _broker(pipeline_lab, slippage_bps=0, fee_bps=0, starting_cash=10_000)
    _bar(pipeline_lab, 0, 100.0)
    broker.submit(_buy("o-8", quantity=3))
    broker.submit(OrderRequest(client_order_id="o-9", symbol="BTC-USD", side=Side.SELL, quantity=1))
    before = broker.account()
    assert before.cash == pytest.approx(10_000 - 300 + 100)
    assert before.positions == {"BTC-USD": pytest.approx(2.0)}
    assert before.equity == pytest.approx(before.cash + 2 * 100.0)
    # A restart: a new object with another configured cash; the account opened once stays.
    restarted = _broker(pipeline_lab, starting_cash=1.0)
    assert restarted.account() == before
    assert restarted.positions() == {"BTC-USD": pytest.approx(2.0)}


def test_cancel_all_cancels_working_orders_only(pipeline_lab: Lab) -> None:
    broker = _broker(pipeline_lab)
    _bar(pipeline_lab, 0, 100.0)
    broker.submit(_buy("o-10"))
    broker.submit(_buy("o-11", order_type=OrderType.LIMIT, limit_price=1.0))
    (canceled,) = broker.cancel_all()
    assert canceled.client_order_id == "o-11" and canceled.status is OrderStatus.CANCELED
    assert pipeline_lab.records.order("o-10").status == OrderStatus.FILLED.value


def test_config_is_live_tunable_in_the_records(pipeline_lab: Lab) -> None:
    records = pipeline_lab.records
    assert PaperConfig.from_records(records) == PaperConfig()
    records.set_config("broker.paper.slippage_bps", 0.0, changed_by="user:test", reason="t")
    records.set_config("broker.paper.participation", 0.5, changed_by="user:test", reason="t")
    config = PaperConfig.from_records(records)
    assert (config.slippage_bps, config.participation) == (0.0, 0.5)
    records.set_config("broker.paper.participation", 2.0, changed_by="user:test", reason="t")
    with pytest.raises(ValidationError, match="participation"):
        PaperConfig.from_records(records)


def test_latency_holds_an_order_back_that_many_bars(pipeline_lab: Lab) -> None:
    broker = _broker(pipeline_lab, latency_bars=2)
    _bar(pipeline_lab, 0, 100.0)
    placed = broker.submit(_buy("o-12"))
    assert placed.order.status is OrderStatus.ACCEPTED and placed.fills == ()
    assert broker.advance(_bar(pipeline_lab, 1, 101.0)) == []
    (report,) = broker.advance(_bar(pipeline_lab, 2, 102.0))
    assert report.fills[0].price == pytest.approx(102.0 * 1.0005)
