"""The shadow fill: the paper broker's fill model on a venue's order and bar, by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tradeos_lab.brokers import PaperBroker
from tradeos_lab.brokers.paper import PaperConfig
from tradeos_lab.contracts import Bar
from tradeos_lab.errors import ValidationError
from tradeos_lab.stores.records import Order, RecordsStore
from tradeos_lab.tca import shadow_fill

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
BAR = Bar(
    symbol="AAPL",
    timeframe="1m",  # type: ignore[arg-type]
    ts=T0,
    open=100.0,
    high=100.5,
    low=99.8,
    close=100.0,
    volume=8.0,
    source="alpaca",
)


@pytest.fixture
def model(tmp_path: Path) -> PaperBroker:
    """5 bps slippage, 10 bps fee, at most half a bar's volume per fill."""
    config = PaperConfig(slippage_bps=5, fee_bps=10, participation=0.5)
    records = RecordsStore.from_url(f"sqlite:///{tmp_path / 'records.db'}")
    return PaperBroker(records, lambda _symbol: None, config=config)


def _order(**values: object) -> Order:
    base: dict[str, object] = {
        "client_order_id": "tl-venue-1",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10.0,
        "order_type": "market",
        "limit_price": None,
        "time_in_force": "day",
        "broker": "alpaca",
    }
    return Order(**{**base, **values})


def test_the_model_fills_what_the_bars_volume_allows_at_its_slipped_close(
    model: PaperBroker,
) -> None:
    s = shadow_fill(
        model, _order(), BAR, filled_before=0, venue_quantity=10, venue_price=100.02, venue_fee=0
    )
    assert s.quantity == 4.0  # half of the bar's 8
    assert s.price == pytest.approx(100.05)  # close + 5 bps
    assert s.fee == pytest.approx(4 * 100.05 * 0.001)
    assert s.quantity_diff == -6.0
    assert s.fee_diff == pytest.approx(0.4002)
    assert s.price_diff_bps == pytest.approx((100.05 - 100.02) / 100.02 * 10_000)  # ~3.0


def test_a_sell_priced_better_by_the_model_has_a_negative_difference(model: PaperBroker) -> None:
    s = shadow_fill(
        model,
        _order(side="sell", quantity=2.0),
        BAR,
        filled_before=0,
        venue_quantity=2,
        venue_price=99.90,
        venue_fee=0.1,
    )
    assert (s.quantity, s.price) == (2.0, pytest.approx(99.95))
    assert s.price_diff_bps == pytest.approx(-(99.95 - 99.90) / 99.90 * 10_000)


def test_a_limit_the_bar_never_reached_fills_nothing_in_the_model(model: PaperBroker) -> None:
    s = shadow_fill(
        model,
        _order(order_type="limit", limit_price=99.5),
        BAR,
        filled_before=0,
        venue_quantity=1,
        venue_price=99.5,
        venue_fee=0,
    )
    assert (s.quantity, s.price, s.fee, s.price_diff_bps) == (0.0, None, 0.0, None)


def test_the_model_counts_what_the_order_filled_before(model: PaperBroker) -> None:
    s = shadow_fill(
        model, _order(), BAR, filled_before=8, venue_quantity=2, venue_price=100, venue_fee=0
    )
    assert s.quantity == 2.0  # only the rest of the order


def test_a_shadow_on_another_symbols_bar_or_a_filled_order_is_refused(model: PaperBroker) -> None:
    with pytest.raises(ValidationError, match="needs a MSFT bar"):
        shadow_fill(
            model,
            _order(symbol="MSFT"),
            BAR,
            filled_before=0,
            venue_quantity=1,
            venue_price=1,
            venue_fee=0,
        )
    with pytest.raises(ValidationError, match="cannot have 10 filled"):
        shadow_fill(
            model, _order(), BAR, filled_before=10, venue_quantity=1, venue_price=1, venue_fee=0
        )
