"""`backtest(strategy, bars)`: a strategy's batch signals through vectorbt, with costs and stops.

The strategy is the same class the paper pipeline runs; its rule is evaluated over whole arrays
by the batch form (`Market.signals`) and the masks go to vectorbt: `Portfolio.from_signals` with
stops, and otherwise `kernels.signal_orders_nb`, the same simulation by vectorbt's own order
functions without the per-bar cost of the features a backtest without stops does not use (its
order records are `from_signals`' bit for bit; `result.portfolio` is built from them on use).
Several symbols form one portfolio sharing its cash. Orders fill at the bar's close moved by the
slippage, and pay the fee, as the paper broker fills a market order (`BacktestProfile`).

vectorbt runs on its Rust engine when `vectorbt-rust` is installed and on numba otherwise;
`vectorbt_engine()` says which, and every result and run record carries it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradeos_lab.bars import BarSource
from tradeos_lab.errors import ValidationError
from tradeos_lab.research.kernels import trade_counts_nb, value_stats
from tradeos_lab.research.market import BarSet, Market, load_bars
from tradeos_lab.strategies.base import Strategy
from tradeos_lab.strategies.batch import SIGNAL_MASKS
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


@dataclass
class Simulation:
    """What one simulation of signal columns gave: vectorbt's order records over `close` (bars
    x symbols; column c trades symbol `col_symbol[c]`), the metrics row (`groups`) of every
    column, and what the vectorbt portfolio needs to be built from them (`portfolio()`).

    The metrics count from `start_row`; `stats` are `kernels.STATS` per group (and "value", the
    value per bar and group, with `curve`) when the simulation folded them in as it ran.
    """

    orders: np.ndarray
    close: np.ndarray
    col_symbol: np.ndarray
    groups: np.ndarray
    index: pd.DatetimeIndex
    columns: pd.Index
    group_by: Any
    init_cash: float
    freq: pd.Timedelta | None
    start_row: int = 0
    curve: bool = False
    stats: dict[str, np.ndarray] | None = field(default=None, repr=False)
    built: Any = field(default=None, repr=False)
    """The vectorbt portfolio, when the simulation ran through `from_signals`."""

    def column_close(self) -> np.ndarray:
        """The close of every column (bars x columns); a view when all columns are one symbol."""
        if self.close.shape[1] == 1:
            return np.broadcast_to(self.close, (self.close.shape[0], len(self.col_symbol)))
        return self.close[:, self.col_symbol]

    def portfolio(self) -> Any:
        """The vectorbt portfolio of these orders: what `from_signals` returns for them."""
        if self.built is None:
            import vectorbt as vbt
            from vectorbt.base.array_wrapper import ArrayWrapper
            from vectorbt.portfolio.enums import log_dt

            close: pd.Series | pd.DataFrame
            if len(self.columns) == 1:
                close = pd.Series(self.close[:, 0], self.index, name=self.columns[0])
            else:
                close = pd.DataFrame(self.column_close(), self.index, self.columns)
            wrapper = ArrayWrapper.from_obj(close, freq=self.freq, group_by=self.group_by)
            cash_sharing = self.group_by is not None
            groups = wrapper.grouper.get_group_lens(group_by=None if cash_sharing else False)
            self.built = vbt.Portfolio(
                wrapper,
                close,
                self.orders,
                np.empty(0, dtype=log_dt),
                np.full(len(groups), self.init_cash),
                cash_sharing,
            )
        return self.built


def simulate(
    market: Market,
    masks: dict[str, np.ndarray],
    columns: pd.Index,
    *,
    profile: BacktestProfile,
    stops: Stops,
    group_by: Any = None,
    start_row: int = 0,
    curve: bool = False,
) -> Simulation:
    """The orders of `masks` (rows x columns, each column one symbol of the market, repeated
    per parameter set), grouped by `group_by` with shared cash: vectorbt's
    `Portfolio.from_signals`, or with no stops the same simulation by `kernels.signal_orders_nb`
    (vectorbt's order functions without its per-bar cost of every feature; the same records),
    which folds the metrics from `start_row` (and the value per bar with `curve`) in as it runs."""
    n_symbols = len(market.symbols)
    col_symbol = np.tile(np.arange(n_symbols, dtype=np.int64), len(columns) // n_symbols)
    # vectorbt converts a tz-aware index to Timestamp objects on every wrap (~0.2 s per 100k
    # bars and call); it gets the same UTC times without the zone.
    index = market.index.tz_convert(None)
    tf = market.barset.timeframe
    freq = pd.Timedelta(seconds=tf.seconds) if tf else None
    groups = (
        np.arange(len(columns))
        if group_by is None
        else np.repeat(np.arange(len(columns) // n_symbols), n_symbols)
    )
    found = Simulation(
        orders=np.empty(0),
        close=market.prices["close"],
        col_symbol=col_symbol,
        groups=groups,
        index=index,
        columns=columns,
        group_by=group_by,
        init_cash=profile.init_cash,
        freq=freq,
        start_row=start_row,
        curve=curve,
    )
    options = _signal_options(profile) if not stops.any else None
    if options is None:
        found.built = _from_signals(found, market, masks, profile=profile, stops=stops)
        found.orders = found.built.order_records
        return found
    found.orders, found.stats = _signal_orders(found, masks, options)
    return found


@functools.lru_cache(maxsize=64)
def _enum_value(value: Any, enum: Any) -> int:
    """A vectorbt setting (a name or a number) as its enum's number, as `from_signals` maps it
    (the mapping costs ~1 ms a call; settings repeat)."""
    from vectorbt.utils.enum_ import map_enum_fields

    return int(map_enum_fields(value, enum, ignore_type=(int, bool)))


def _signal_options(profile: BacktestProfile) -> dict[str, Any] | None:
    """vectorbt's portfolio settings as `signal_orders_nb` takes them (mapped the way
    `from_signals` maps them), or None where the settings ask for what it does not do: a
    valuation price other than the order price, logs, rejections, another call order or
    engine."""
    from vectorbt._settings import settings
    from vectorbt.portfolio.enums import (
        AccumulationMode,
        ConflictMode,
        DirectionConflictMode,
        OppositeEntryMode,
        SizeType,
    )

    config = settings["portfolio"]
    plain = (
        vectorbt_engine() == "numba"
        and np.isinf(config["val_price"])
        and config["val_price"] > 0
        and not config["log"]
        and config["reject_prob"] == 0
        and config["call_seq"] == "default"
    )
    if not plain:
        return None
    costs = profile.portfolio_arguments()
    return {
        "size": float(costs["size"]),
        "size_type": _enum_value(costs["size_type"], SizeType),
        "fees": float(costs["fees"]),
        "fixed_fees": float(config["fixed_fees"]),
        "slippage": float(costs["slippage"]),
        "min_size": float(config["min_size"]),
        "max_size": float(config["max_size"]),
        "size_granularity": float(config["size_granularity"]),
        "lock_cash": bool(config["lock_cash"]),
        "allow_partial": bool(config["allow_partial"]),
        "raise_reject": bool(config["raise_reject"]),
        "accumulate": _enum_value(config["accumulate"], AccumulationMode),
        "upon_long_conflict": _enum_value(config["upon_long_conflict"], ConflictMode),
        "upon_short_conflict": _enum_value(config["upon_short_conflict"], ConflictMode),
        "upon_dir_conflict": _enum_value(config["upon_dir_conflict"], DirectionConflictMode),
        "upon_opposite_entry": _enum_value(config["upon_opposite_entry"], OppositeEntryMode),
        "ffill_val_price": bool(config["ffill_val_price"]),
        "update_value": bool(config["update_value"]),
    }


def _signal_orders(
    found: Simulation, masks: dict[str, np.ndarray], options: dict[str, Any]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from vectorbt.portfolio.nb import init_records_nb

    from tradeos_lab.research.kernels import STATS, signal_orders_nb

    n_rows, n_cols = masks["entries"].shape
    shared = found.group_by is not None
    group_lens = np.bincount(found.groups) if shared else np.ones(n_cols, dtype=np.int64)
    orders, logs = init_records_nb((n_rows, n_cols), n_rows * n_cols, 1)
    stats = np.full((len(group_lens), len(STATS)), np.nan)
    curve = np.empty((n_rows, len(group_lens)) if found.curve else (0, 0))
    count = signal_orders_nb(
        found.close,
        found.col_symbol,
        masks["entries"],
        masks["exits"],
        masks["short_entries"],
        masks["short_exits"],
        group_lens.astype(np.int64),
        np.full(len(group_lens), float(found.init_cash)),
        start_row=found.start_row,
        order_records=orders,
        log_records=logs,
        stats=stats,
        curve=curve,
        **options,
    )
    folded = {name: stats[:, k] for k, name in enumerate(STATS)}
    if found.curve:
        folded["value"] = curve
    # A view: the pages past `count` were never written, so they hold no memory.
    found_orders: np.ndarray = orders[:count]
    return found_orders, folded


def _from_signals(
    found: Simulation,
    market: Market,
    masks: dict[str, np.ndarray],
    *,
    profile: BacktestProfile,
    stops: Stops,
) -> Any:
    """`vectorbt.Portfolio.from_signals` of the masks (stops and settings the kernel does not
    cover)."""
    import vectorbt as vbt

    columns, index = found.columns, found.index
    repeat = len(columns) // len(market.symbols)

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
    return vbt.Portfolio.from_signals(
        **prices,
        **signals,
        **profile.portfolio_arguments(),
        **stops.portfolio_arguments(),
        group_by=found.group_by,
        cash_sharing=found.group_by is not None,
        freq=found.freq,
    )


def portfolio_metrics(found: Simulation, index: pd.DatetimeIndex) -> pd.DataFrame:
    """`METRICS` per simulated column (or group of columns sharing cash): one row each.

    Values, returns and drawdowns come from the simulation's own pass, or from one pass over the
    order records (`kernels.value_stats`); trades from vectorbt's trade records. From the
    simulation's `start_row` on only (a walk-forward test window after its warm-up bars, which
    must hold no position). With its `curve`, `frame.attrs["equity"]` is the value per bar and
    row (bars x rows).
    """
    groups = found.groups
    n_groups = int(groups.max()) + 1
    start_row, init_cash = found.start_row, found.init_cash
    stats = found.stats or value_stats(
        found.close,
        found.col_symbol,
        found.orders,
        groups,
        init_cash=init_cash,
        start_row=start_row,
        curve=found.curve,
    )
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
    records = _trade_records(found)
    count, n_closed, wins = trade_counts_nb(
        records["col"],
        records["entry_idx"],
        records["status"],
        records["pnl"],
        groups.astype(np.int64, copy=False),
        start_row,
        n_groups,
    ).T
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
    if found.curve:
        frame.attrs["equity"] = stats["value"]
    return frame


def _trade_records(found: Simulation) -> np.ndarray:
    """`portfolio.trades.values` (exit trades) straight from vectorbt's kernel: the `Orders`
    and `Trades` objects around the records cost more than the kernel (~8 ms per backtest)."""
    from vectorbt._settings import settings
    from vectorbt.portfolio import dispatch
    from vectorbt.portfolio.enums import TradesType
    from vectorbt.records import dispatch as records_dispatch

    kind = _enum_value(settings["portfolio"]["trades_type"], TradesType)
    if found.built is not None and found.built.trades_type != TradesType.ExitTrades:
        return np.asarray(found.built.trades.values)
    if found.built is None and kind != TradesType.ExitTrades:
        return np.asarray(found.portfolio().trades.values)
    close = found.column_close()
    col_map = records_dispatch.col_map(found.orders["col"], close.shape[1])
    trades: np.ndarray = dispatch.get_exit_trades(found.orders, close, col_map)
    return trades


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
    simulation: Simulation = field(repr=False)
    run_id: Any = None
    """The run's id in the records' backtest runs, when it was recorded."""

    @property
    def portfolio(self) -> Any:
        """The vectorbt portfolio of the run's orders (built on first use: metrics and equity
        do not need it)."""
        return self.simulation.portfolio()

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
    found = simulate(
        market, masks, columns, profile=profile, stops=stops, group_by=group_by, curve=True
    )
    table = portfolio_metrics(found, market.index)
    result = BacktestResult(
        strategy=chosen,
        barset=barset,
        profile=profile,
        stops=stops,
        engine=vectorbt_engine(),
        metrics=dict(
            zip(METRICS, table[list(METRICS)].to_numpy(np.float64)[0].tolist(), strict=True)
        ),
        equity=pd.Series(table.attrs["equity"][:, 0], index=market.index, name="equity"),
        simulation=found,
    )
    if records is not None:
        result.run_id = record_backtest(records, result)
    return result
