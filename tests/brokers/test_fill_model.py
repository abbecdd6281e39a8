"""The paper fill model, public: the one rule the paper broker fills by and TCA's shadow fill
runs on a venue's order. The paper broker's fill on the machine's PostgreSQL equals it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradeos_lab.brokers import OrderRequest, PaperBroker, PaperConfig, fill_model
from tradeos_lab.contracts import Bar, OrderType, Side, TimeInForce
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab

BAR = Bar(
    symbol="AAPL",
    timeframe="1m",  # type: ignore[arg-type]
    ts=datetime(2024, 3, 1, 14, 30, tzinfo=UTC),
    open=100.0,
    high=102.0,
    low=99.0,
    close=101.0,
    volume=50.0,
    source="synthetic",
)
CONFIG = PaperConfig(slippage_bps=10.0, participation=0.5, fee_bps=20.0)


def test_a_market_buy_takes_its_share_of_the_volume_at_the_close_moved_against_it() -> None:
    fill = fill_model(CONFIG, BAR, side="buy", quantity=40.0, filled=5.0)
    assert fill.quantity == 25.0  # half the bar's 50, less than the 35 still to fill
    assert fill.price == pytest.approx(101.0 * 1.001)
    assert fill.fee == pytest.approx(25.0 * 101.0 * 1.001 * 0.002)


def test_a_limit_fills_only_when_the_bar_traded_through_it_never_worse() -> None:
    below = fill_model(CONFIG, BAR, side="buy", quantity=1, order_type="limit", limit_price=98.0)
    assert below.quantity == 0.0
    capped = fill_model(CONFIG, BAR, side=Side.BUY, quantity=1, order_type="limit", limit_price=101)
    assert (capped.quantity, capped.price) == (1.0, 101.0)
    sell = fill_model(CONFIG, BAR, side="sell", quantity=1, order_type="limit", limit_price=103.0)
    assert sell.quantity == 0.0
    with pytest.raises(ValidationError, match="limit price"):
        fill_model(CONFIG, BAR, side="buy", quantity=1, order_type=OrderType.LIMIT)


def test_fill_or_kill_fills_all_on_the_bar_or_nothing() -> None:
    kill = fill_model(CONFIG, BAR, side="sell", quantity=30.0, time_in_force=TimeInForce.FOK)
    assert kill.quantity == 0.0
    whole = fill_model(CONFIG, BAR, side="sell", quantity=20.0, time_in_force="fok")
    assert whole.quantity == 20.0
    assert whole.price == pytest.approx(101.0 * 0.999)


def test_the_paper_broker_fills_by_the_same_model(armed_server_lab: Lab) -> None:
    lab = armed_server_lab
    broker = PaperBroker(
        lab.records, lambda symbol: BAR if symbol == "AAPL" else None, config=CONFIG
    )
    request = OrderRequest(client_order_id="fm-1", symbol="AAPL", side=Side.BUY, quantity=40.0)
    (fill,) = broker.submit(request).fills
    expected = fill_model(CONFIG, BAR, side="buy", quantity=40.0)
    assert (fill.quantity, fill.price, fill.fee) == pytest.approx(
        (expected.quantity, expected.price, expected.fee)
    )
