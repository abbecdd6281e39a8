"""`backtest(strategy, bars)`: a strategy's batch signals through vectorbt, with costs and stops.

The strategy is the same class the paper pipeline runs; its rule is evaluated over whole arrays
by the batch form (`Market.signals`) and the masks go to `vectorbt.Portfolio.from_signals`.
Several symbols form one portfolio sharing its cash. Orders fill at the bar's close moved by the
slippage, and pay the fee, as the paper broker fills a market order (`BacktestProfile`).

vectorbt runs on its Rust engine when `vectorbt-rust` is installed and on numba otherwise;
`vectorbt_engine()` says which, and every result and run record carries it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradeos_lab.bars import BarSource
from tradeos_lab.errors import ValidationError
from tradeos_lab.research.kernels import value_stats
from tradeos_lab.research.market import SIGNAL_MASKS, BarSet, Market, load_bars
from tradeos_lab.strategies.base import Strategy
from tradeos_lab.strategies.registry import get_strategy
from tradeos_lab.symbols import Timeframe

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from tradeos_lab.brokers.paper import PaperConfig
    from tradeos_lab.stores.records import PolicyProfile, RecordsStore

METRICS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "trades",
    "exposure",
)
"""Every run's metrics: returns and drawdown as fractions (0.12 = 12 %), Sharpe and Sortino
annualised, win rate over closed trades, exposure as the share of bars holding a position."""
YEAR = pd.Timedelta(days=365.25)


def vectorbt_engine() -> str:
    """The engine vectorbt simulates on: "rust" when `vectorbt-rust` is installed (and the
    engine setting allows it), else "numba"."""
    from vectorbt._engine import is_rust_available
    from vectorbt._settings import settings

    chosen = settings["engine"]
    if chosen == "numba":
        return "numba"
    return "rust" if is_rust_available() else "numba"


@dataclass(frozen=True)
class BacktestProfile:
    """Costs and sizing of a backtest: the paper broker's fee and slippage (what a paper fill
    pays) and the policy profile's largest position, so research and paper trade alike.

    An entry commits `position_pct` % of the starting cash (a fixed notional, capped by the cash
    there is); at 100 it commits all the cash there is, so returns compound (the reference
    backtesters' convention). vectorbt cannot reverse a position sized in percent of cash, which
    is why a share below 100 is a notional. Symbols of one portfolio share its cash: give
    several symbols a share each (50 for two).
    """

    fee_bps: float = 10.0
    slippage_bps: float = 5.0
    position_pct: float = 100.0
    init_cash: float = 100_000.0
    name: str = "default"

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValidationError(f"profile {name} must be a finite number >= 0, got {value}")
        if not _finite(self.position_pct) or not 0 < self.position_pct <= 100:
            raise ValidationError(
                f"profile position_pct must be in (0, 100], got {self.position_pct}"
            )
        if not _finite(self.init_cash) or self.init_cash <= 0:
            raise ValidationError(f"profile init_cash must be positive, got {self.init_cash}")

    @classmethod
    def from_policy(
        cls, policy: PolicyProfile, paper: PaperConfig | None = None
    ) -> BacktestProfile:
        """Sizing from a policy profile (its `max_position_pct`), costs and starting cash from the
        paper broker's configuration."""
        from tradeos_lab.brokers.paper import PaperConfig

        paper = paper or PaperConfig()
        return cls(
            fee_bps=paper.fee_bps,
            slippage_bps=paper.slippage_bps,
            position_pct=min(100.0, policy.max_position_pct),
            init_cash=paper.starting_cash,
            name=policy.name,
        )

    @classmethod
    def from_records(cls, records: RecordsStore, policy: str) -> BacktestProfile:
        """The named policy profile and the paper broker's config as the records hold them."""
        from tradeos_lab.brokers.paper import PaperConfig

        return cls.from_policy(records.profile(policy), PaperConfig.from_records(records))

    def portfolio_arguments(self) -> dict[str, Any]:
        sizing: dict[str, Any] = (
            {"size": np.inf, "size_type": "amount"}
            if self.position_pct == 100
            else {"size": self.init_cash * self.position_pct / 100, "size_type": "value"}
        )
        return {
            "fees": self.fee_bps / 10_000,
            "slippage": self.slippage_bps / 10_000,
            **sizing,
            "init_cash": self.init_cash,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stops:
    """Exits vectorbt checks against each bar's high and low: a stop-loss `stop_loss` below the
    entry (a fraction: 0.02 = 2 %; trailing the peak with `trailing`) and a take-profit
    `take_profit` above it (mirrored for shorts)."""

    stop_loss: float | None = None
    take_profit: float | None = None
    trailing: bool = False

    def __post_init__(self) -> None:
        if self.stop_loss is not None and not (_finite(self.stop_loss) and 0 < self.stop_loss < 1):
            raise ValidationError(f"stop_loss must be a fraction in (0, 1), got {self.stop_loss}")
        if self.take_profit is not None and not (
            _finite(self.take_profit) and self.take_profit > 0
        ):
            raise ValidationError(
                f"take_profit must be a positive fraction, got {self.take_profit}"
            )
        if self.trailing and self.stop_loss is None:
            raise ValidationError("a trailing stop needs a stop_loss")

    @property
    def any(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None

    def portfolio_arguments(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.stop_loss is not None:
            out["sl_stop"] = self.stop_loss
            out["sl_trail"] = self.trailing
        if self.take_profit is not None:
            out["tp_stop"] = self.take_profit
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def simulate(
    market: Market,
    masks: dict[str, np.ndarray],
    columns: pd.Index,
    *,
    profile: BacktestProfile,
    stops: Stops,
    group_by: Any = None,
) -> Any:
    """`vectorbt.Portfolio.from_signals` over `masks` (rows x columns, each column one symbol of
    the market, repeated per parameter set), grouped by `group_by` with shared cash."""
    import vectorbt as vbt

    repeat = len(columns) // len(market.symbols)
    # vectorbt converts a tz-aware index to Timestamp objects on every wrap (~0.2 s per 100k
    # bars and call); it gets the same UTC times without the zone.
    index = market.index.tz_convert(None)

    def wide(name: str) -> pd.DataFrame | pd.Series:
        data = market.prices[name]
        if data.shape[1] == 1:  # vectorbt broadcasts one column without copying it
            return pd.Series(data[:, 0], index)
        return pd.DataFrame(np.tile(data, (1, repeat)) if repeat > 1 else data, index, columns)

    prices: dict[str, Any] = {"close": wide("close")}
    if stops.any:
        prices.update(open=wide("open"), high=wide("high"), low=wide("low"))
    signals: dict[str, Any]
    if len(columns) == 1:  # one column: the masks broadcast against the close as they are
        signals = {name: masks[name][:, 0] for name in SIGNAL_MASKS}
        prices = {name: series.rename(columns[0]) for name, series in prices.items()}
    else:
        signals = {name: pd.DataFrame(masks[name], index, columns) for name in SIGNAL_MASKS}
    tf = market.barset.timeframe
    return vbt.Portfolio.from_signals(
        **prices,
        **signals,
        **profile.portfolio_arguments(),
        **stops.portfolio_arguments(),
        group_by=group_by,
        cash_sharing=group_by is not None,
        freq=pd.Timedelta(seconds=tf.seconds) if tf else None,
    )


def portfolio_metrics(
    portfolio: Any,
    index: pd.DatetimeIndex,
    init_cash: float,
    *,
    start_row: int = 0,
    curve: bool = False,
) -> pd.DataFrame:
    """`METRICS` per portfolio column (or group of columns sharing cash): one row each.

    Values, returns and drawdowns come from one pass over the order records
    (`kernels.value_stats`), trades from vectorbt's trade records. From `start_row` on only (a
    walk-forward test window after its warm-up bars, which must hold no position). With `curve`,
    `frame.attrs["equity"]` is the value per bar and row (bars x rows).
    """
    close = np.asarray(portfolio.close, dtype=np.float64)
    close = close.reshape(len(close), -1)
    groups = _column_groups(portfolio, close.shape[1])
    n_groups = int(groups.max()) + 1
    orders = portfolio.order_records
    stats = value_stats(close, orders, groups, init_cash, start_row, curve=curve)
    index = index[start_row:]
    elapsed = (index[-1] - index[0]) if len(index) > 1 else pd.Timedelta(0)
    years = elapsed / YEAR
    # Annualised by the bars per year the data has: 252 sessions of a stock, 365 days of crypto.
    per_year = (len(index) - 1) / years if years > 0 else np.nan
    growth = stats["final_value"] / init_cash
    mean, std, downside = stats["mean"], stats["std"], stats["downside"]
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std * np.sqrt(per_year), np.nan)
        sortino = np.where(downside > 0, mean / downside * np.sqrt(per_year), np.nan)
        cagr = np.where(growth > 0, growth ** (1 / years) - 1, -1.0) if years > 0 else np.nan
    records = _trade_records(portfolio, orders, close)
    records = records[records["entry_idx"] >= start_row]
    trade_group = groups[records["col"]]
    closed = records["status"] == 1
    count = np.bincount(trade_group, minlength=n_groups)
    n_closed = np.bincount(trade_group[closed], minlength=n_groups)
    wins = np.bincount(trade_group[closed & (records["pnl"] > 0)], minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(n_closed > 0, wins / n_closed, np.nan)
    frame = pd.DataFrame(
        {
            "total_return": growth - 1.0,
            "cagr": cagr,
            "sharpe": sharpe,
            "sortino": sortino,
            "max_drawdown": stats["max_drawdown"],
            "win_rate": win_rate,
            "trades": count,
            "exposure": stats["exposure"],
        }
    )
    if curve:
        frame.attrs["equity"] = stats["value"]
    return frame


def _trade_records(portfolio: Any, orders: np.ndarray, close: np.ndarray) -> np.ndarray:
    """`portfolio.trades.values` (exit trades) straight from vectorbt's kernel: the `Orders`
    and `Trades` objects around the records cost more than the kernel (~8 ms per backtest)."""
    from vectorbt.portfolio import dispatch
    from vectorbt.portfolio.enums import TradesType
    from vectorbt.records import dispatch as records_dispatch

    if portfolio.trades_type != TradesType.ExitTrades:
        return np.asarray(portfolio.trades.values)
    col_map = records_dispatch.col_map(orders["col"], close.shape[1], engine=portfolio.engine)
    trades: np.ndarray = dispatch.get_exit_trades(orders, close, col_map, engine=portfolio.engine)
    return trades


def _column_groups(portfolio: Any, n_columns: int) -> np.ndarray:
    """The group (row of the metrics) of every portfolio column."""
    grouper = portfolio.wrapper.grouper
    if grouper.group_by is None:
        return np.arange(n_columns)
    return np.asarray(grouper.get_groups(), dtype=np.int64)


@dataclass
class BacktestResult:
    """A backtest's metrics and equity curve, the vectorbt portfolio behind them, and what ran."""

    strategy: Strategy[Any]
    barset: BarSet
    profile: BacktestProfile
    stops: Stops
    engine: str
    metrics: dict[str, float]
    equity: pd.Series
    portfolio: Any = field(repr=False)
    run_id: Any = None
    """The run's id in the records' backtest runs, when it was recorded."""

    def trades(self) -> pd.DataFrame:
        """Every trade: symbol, direction, entry and exit time and price, P&L, return, status."""
        readable: pd.DataFrame = self.portfolio.trades.records_readable
        for column in ("Entry Timestamp", "Exit Timestamp"):
            if column in readable:
                readable[column] = pd.to_datetime(readable[column]).dt.tz_localize("UTC")
        return readable

    def drawdown(self) -> pd.Series:
        return self.equity / self.equity.cummax() - 1.0

    def plot(self) -> go.Figure:
        """Equity and drawdown over time."""
        from tradeos_lab.research.figures import equity_figure

        return equity_figure(self.equity, self.drawdown(), title=repr(self.strategy))

    def plot_trades(self, symbol: str | None = None) -> go.Figure:
        """The close of `symbol` (the first by default) with the entries and exits on it."""
        from tradeos_lab.research.figures import trades_figure

        chosen = symbol or self.barset.symbols[0]
        if chosen not in self.barset.symbols:
            raise ValidationError(f"{chosen!r} was not backtested; there are {self.barset.symbols}")
        bars = self.barset.bars.loc[self.barset.bars["symbol"] == chosen]
        trades = self.trades()
        if "Column" in trades:
            trades = trades.loc[trades["Column"] == chosen]
        return trades_figure(bars, trades, title=f"{self.strategy!r} on {chosen}")

    def summary(self) -> dict[str, Any]:
        """What ran and how it did, for a table or a run record."""
        return {
            "strategy": self.strategy.name,
            "parameters": self.strategy.params.model_dump(mode="json"),
            "symbols": list(self.barset.symbols),
            "timeframe": self.barset.timeframe.value if self.barset.timeframe else None,
            "engine": self.engine,
            **self.metrics,
        }


def resolve_strategy(strategy: Strategy[Any] | str) -> Strategy[Any]:
    """A strategy instance, or a registered name / reference with default parameters."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        return get_strategy(strategy)()
    raise ValidationError(f"strategy must be a Strategy or a name, got {type(strategy).__name__}")


def backtest(
    strategy: Strategy[Any] | str,
    bars: pd.DataFrame | BarSource | BarSet,
    *,
    symbols: str | Sequence[str] | None = None,
    timeframe: Timeframe | str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    profile: BacktestProfile | None = None,
    stops: Stops | None = None,
    records: RecordsStore | None = None,
) -> BacktestResult:
    """Backtest `strategy` on `bars` (a bar frame or a bar source, see `load_bars`).

    With `records`, the run is kept in the records' backtest runs and `result.run_id` names it.
    """
    from tradeos_lab.research.runs import record_backtest

    chosen = resolve_strategy(strategy)
    barset = load_bars(bars, symbols=symbols, timeframe=timeframe, start=start, end=end)
    profile = profile or BacktestProfile()
    stops = stops or Stops()
    market = Market.of(barset)
    masks = market.signals(chosen)
    columns = pd.Index(market.symbols, name="symbol")
    group_by = True if len(columns) > 1 else None
    portfolio = simulate(market, masks, columns, profile=profile, stops=stops, group_by=group_by)
    table = portfolio_metrics(portfolio, market.index, profile.init_cash, curve=True)
    metrics, value = table.iloc[0], table.attrs["equity"][:, 0]
    result = BacktestResult(
        strategy=chosen,
        barset=barset,
        profile=profile,
        stops=stops,
        engine=vectorbt_engine(),
        metrics={k: _plain(metrics[k]) for k in METRICS},
        equity=pd.Series(value, index=market.index, name="equity"),
        portfolio=portfolio,
    )
    if records is not None:
        result.run_id = record_backtest(records, result)
    return result


def _plain(value: Any) -> float:
    """A metric as a float (NaN where it is undefined, e.g. the win rate without trades)."""
    return float(value)
