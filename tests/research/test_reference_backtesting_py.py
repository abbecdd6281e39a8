"""The SMA-cross backtest checked against backtesting.py on the GOOG daily bars it ships.

backtesting.py fills a market order at the next bar's open by default (`trade_on_close=False`)
and at the signal bar's close with `trade_on_close=True`; our backtests fill at the signal bar's
close (as the paper broker fills a market order). It also buys whole shares with 99.99 % of the
equity where vectorbt buys fractional ones, which is the rest of the difference in return.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from backtesting import Backtest
from backtesting import Strategy as ReferenceStrategy
from backtesting.lib import crossover
from backtesting.test import GOOG, SMA

from tradeos_lab.research import BacktestProfile, BacktestResult, backtest
from tradeos_lab.strategies import SmaCross


class ReferenceSmaCross(ReferenceStrategy):  # type: ignore[misc]
    """backtesting.py's own SMA-cross example: always in the market, reversed on each cross."""

    n1, n2 = 10, 20

    def init(self) -> None:
        self.sma1 = self.I(SMA, self.data.Close, self.n1)
        self.sma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell()


def _reference(trade_on_close: bool) -> Any:
    test = Backtest(
        GOOG,
        ReferenceSmaCross,
        cash=10_000,
        commission=0,
        trade_on_close=trade_on_close,
        finalize_trades=True,
    )
    return test.run()


@pytest.fixture(scope="module")
def ours() -> BacktestResult:
    bars = (
        GOOG.rename(columns=str.lower)
        .rename_axis("ts")
        .reset_index()
        .assign(symbol="GOOG", timeframe="1d")
    )
    costless = BacktestProfile(fee_bps=0, slippage_bps=0, init_cash=10_000)
    return backtest(SmaCross(fast=10, slow=20), bars, profile=costless)


def _entries(result: BacktestResult) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(result.trades()["Entry Timestamp"]).tz_convert(None)


def test_fills_on_the_signal_bars_close_match_trade_for_trade(ours: BacktestResult) -> None:
    stats = _reference(trade_on_close=True)
    assert ours.metrics["trades"] == stats["# Trades"]
    assert list(_entries(ours)) == list(pd.DatetimeIndex(stats["_trades"]["EntryTime"]))
    reference_return = stats["Return [%]"] / 100
    print(f"return: ours {ours.metrics['total_return']:.4f}, backtesting.py {reference_return:.4f}")
    assert ours.metrics["total_return"] == pytest.approx(reference_return, rel=0.05)


def test_next_open_fills_enter_one_bar_later(ours: BacktestResult) -> None:
    stats = _reference(trade_on_close=False)
    assert ours.metrics["trades"] == stats["# Trades"]
    bars = GOOG.index
    one_later = [bars[bars.get_loc(ts) + 1] for ts in _entries(ours)]
    assert one_later == list(pd.DatetimeIndex(stats["_trades"]["EntryTime"]))
    reference_return = stats["Return [%]"] / 100
    print(f"return: ours {ours.metrics['total_return']:.4f}, backtesting.py {reference_return:.4f}")
    assert ours.metrics["total_return"] == pytest.approx(reference_return, rel=0.15)
