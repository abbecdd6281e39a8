"""Parity between research and paper: every built-in strategy, the same bars, two engines.

The bundled equity sample (`tests/strategies/data`, the first 120 five-minute bars: a whole
session and half the next) is replayed through the paper pipeline on the machine's Redis and
PostgreSQL (the `replay:PATH` feed, the strategy deployed alone as `lab.pipeline.deploy` runs it,
then Signal Modifier, Feasibility, Execution and Positions), and backtested with `backtest(...)`
under the same costs and the Balanced profile's position size. Both must change the position on
the same bars in the same direction, and each fill price must be what the paper broker's fill
model says it is (`tradeos_lab.brokers.paper`: the close of the bar the order reached the market
on, moved `slippage_bps` against the order, a fee of `fee_bps` of the notional, `latency_bars`
bars after the signal); the table of both prices is printed.

How the pipeline is set up so that a difference would be a real one:

- Lock step: ingestion publishes the next bar only when every consumer group has handled the
  last. The paper broker fills a market order at its symbol's latest cached bar, so a replay
  faster than the pipeline fills at a later bar than the signal's: that is the pace of the replay,
  not a rule of either engine.
- No lingering: Execution reads a quiet symbol's bars (no order working) in batches every
  `QUIET_BARS_LINGER_S`, which in lock step would be a wait on every bar; here it reads each
  bar as it comes, as it does while an order works.
- Market time: the services run on the replayed bar's time (their context clock), as a backtest
  does. On the wall clock Feasibility's market-hours rule judges the October 2025 bars by today's
  hour, and refuses every equity order outside the NYSE session.
- Permissive risk rules (`allow_trading_every_bar`: no cooldown after an exit, a broker rate limit
  no test reaches); the kill switches armed; no hero signals, ensemble weights or other strategy,
  so the Signal Modifier's ensemble is the strategy's own strength. The ATR regime and the policy
  profile scale that strength, which changes the paper position's size but never its side: the
  backtest commits a fixed notional (`BacktestProfile.from_records`), so quantities are not
  compared, only the side and bar of every order and its price.
- The news strategy reads the same scored news on both sides: in the cache, where the sentiment
  scorer keeps it for the live Signal Engine, and as the backtest bars' `sentiment` column
  (`NewsSentiment.with_sentiment`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradeos_lab.brokers.paper import PaperConfig
from tradeos_lab.contracts import AuditMessage
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.news import SentimentCache
from tradeos_lab.pipeline import ServiceContext
from tradeos_lab.pipeline.deploy import deployed_engine
from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.runner import RunningService, ServiceRunner
from tradeos_lab.pipeline.services import execution
from tradeos_lab.pipeline.services.ingestion import Ingestion, bar_message_id
from tradeos_lab.providers import read_bar_file
from tradeos_lab.providers.files import save_bars
from tradeos_lab.research import BacktestProfile, backtest
from tradeos_lab.strategies import (
    BUILTINS,
    MacdTrend,
    OpeningRangeBreakout,
    RsiReversion,
    SmaCross,
    Strategy,
    strategy_names,
)
from tradeos_lab.strategies.builtins import NewsSentiment

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
# The pipeline tests' helpers, imported by path (that folder is not a package).
from end_to_end_support import (
    allow_trading_every_bar,
    settled,
    stream_messages,
    wait_for,
)

SAMPLE = Path(__file__).parents[1] / "strategies" / "data" / "sample_5m_xnys.csv"
SYMBOL = "SAMPLE"
TIMEFRAME = "5m"
BARS = 120
#: Each built-in with parameters that trade several times in `BARS` bars.
STRATEGIES: tuple[Strategy[Any], ...] = (
    SmaCross(fast=5, slow=20),
    RsiReversion(period=7),
    MacdTrend(fast=6, slow=13, signal=5),
    OpeningRangeBreakout(minutes=30),
    NewsSentiment(half_life_minutes=30, trend=10),
)
#: News for `NewsSentiment`: (bar it came out in, score), two minutes after that bar's open.
NEWS = ((10, 0.8), (25, -0.7), (45, 0.9), (60, -0.8), (85, 0.7), (100, -0.9))
#: The stages after the Signal Engine that decide and book a trade (TCA and the audit trail
#: only observe).
STAGES = ("signal_modifier", "feasibility", "execution", "positions")
#: Float error allowed between two computations of one price.
PRICE_RTOL = 1e-9


class MarketClock:
    """The services' clock: the open time of the bar being replayed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def news_scores(bars: pd.DataFrame) -> pd.DataFrame:
    """`NEWS` as the sentiment scorer keeps it: symbol, article id, time and score."""
    return pd.DataFrame(
        {
            "symbol": SYMBOL,
            "article_id": [f"article-{i}" for i, _ in NEWS],
            "ts": [bars["ts"].iloc[i] + pd.Timedelta(minutes=2) for i, _ in NEWS],
            "score": [score for _, score in NEWS],
        }
    )


def research_bars(lab: Lab, strategy: Strategy[Any], bars: pd.DataFrame) -> pd.DataFrame:
    """The bars the backtest reads. The news strategy's carry the sentiment of `NEWS` (its batch
    input), which the paper pipeline reads live from the cache, where the scorer keeps it."""
    if not isinstance(strategy, NewsSentiment):
        return bars
    scores = news_scores(bars)
    retention = lab.settings.news_sentiment_retention_s
    cache = SentimentCache(lab.cache.redis, keys=lab.keys, retention_s=retention)
    for row in scores.itertuples():
        cache.add(row.symbol, row.article_id, row.ts, row.score)
    return strategy.with_sentiment(bars, scores, timeframe=TIMEFRAME)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return read_bar_file(SAMPLE, symbol=SYMBOL, timeframe=TIMEFRAME).iloc[:BARS]


@pytest.fixture
def lab(armed_server_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """A lab on the machine's servers, switches armed, the risk rules permissive; Execution
    reads each bar as it comes."""
    allow_trading_every_bar(armed_server_lab)
    monkeypatch.setattr(execution, "QUIET_BARS_LINGER_S", 0.0)
    return armed_server_lab


def replay_in_lock_step(lab: Lab, strategy: Strategy[Any], bars: pd.DataFrame, path: Path) -> None:
    """Every bar of `bars` through ingestion's replay feed, the strategy's deployed engine and
    `STAGES`, the next bar only once every group has handled the last."""
    settings = lab.settings.model_copy(
        update={
            "pipeline_feed": f"replay:{save_bars(bars, path)}",
            "pipeline_symbols": (SYMBOL,),
            "pipeline_timeframe": TIMEFRAME,
        }
    )
    clock = MarketClock()
    clock.now = bars["ts"].iloc[0].timestamp()

    def context() -> ServiceContext:
        return ServiceContext(lab, settings, instance="parity", clock=clock)

    services = [deployed_engine(strategy), *(service_class(n) for n in STAGES)]
    groups = sum(len(s.inputs) for s in services)
    running: list[RunningService] = []
    try:
        for service in services:
            runner = ServiceRunner(service, context(), block_ms=100, heartbeat_s=0.5)
            running.append(runner.run_in_thread())
        wait_for(lambda: len(lab.bus.inspect.groups()) >= groups, what="every consumer group")
        ingestion = Ingestion(context())
        for ts in bars["ts"]:
            clock.now = ts.timestamp()
            assert ingestion.poll(SYMBOL) is not None
            wait_for(lambda: settled(lab), every=0.002, what=f"the pipeline to handle bar {ts}")
    finally:
        for service in running:
            service.stop()


def backtest_orders(result: Any) -> pd.DataFrame:
    """The backtest's orders: bar time, side, price and fee per unit."""
    orders = result.portfolio.orders.records_readable
    return pd.DataFrame(
        {
            "ts": pd.DatetimeIndex(orders["Timestamp"]).tz_localize("UTC"),
            "side": orders["Side"].str.lower().to_numpy(),
            "price": orders["Price"].to_numpy(dtype=np.float64),
            "fee_per_unit": (orders["Fees"] / orders["Size"]).to_numpy(dtype=np.float64),
        }
    )


def paper_orders(lab: Lab, strategy: Strategy[Any]) -> pd.DataFrame:
    """The paper fills of the strategy: the bar of the signal behind each (its attribution
    chain), side, price, fee per unit, and the bar the broker filled it on."""
    rows = []
    for entry in lab.records.ledger(strategy=strategy.name, symbol=SYMBOL):
        (attribution,) = lab.records.attribution(execution_id=entry.execution_id)
        filled_on = int(entry.execution_id.rsplit(":", 1)[1])  # CLIENT_ORDER_ID:BAR_EPOCH
        rows.append(
            {
                "ts": pd.Timestamp(entry.executed_at),
                "side": entry.side,
                "price": entry.price,
                "fee_per_unit": entry.fee / entry.quantity,
                "signal_bar_message": attribution.trade.market_data_message_id,
                "filled_on": pd.Timestamp(filled_on, unit="s", tz="UTC"),
            }
        )
    return pd.DataFrame(rows)


def fill_model_price(close: float, side: str, paper: PaperConfig) -> float:
    """The paper broker's documented price of a market order on a bar with this close."""
    slip = paper.slippage_bps / 10_000
    return close * (1 + slip if side == "buy" else 1 - slip)


def test_every_builtin_strategy_has_a_parity_case() -> None:
    assert {type(s) for s in STRATEGIES} == set(BUILTINS)
    assert {c.name for c in BUILTINS} <= set(strategy_names())


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_paper_trades_the_backtests_entries_and_exits_bar_for_bar(
    lab: Lab, strategy: Strategy[Any], sample: pd.DataFrame, tmp_path: Path
) -> None:
    researched = research_bars(lab, strategy, sample)
    replay_in_lock_step(lab, strategy, sample, tmp_path / "bars.csv")
    paper = PaperConfig.from_records(lab.records)
    profile = BacktestProfile.from_records(lab.records, "Balanced")
    result = backtest(strategy, researched, profile=profile)
    research = backtest_orders(result)
    traded = paper_orders(lab, strategy)

    refused = [
        m.payload.reason
        for m in stream_messages(lab, Stream.AUDIT)
        if isinstance(m, AuditMessage) and m.payload.action in ("intent.refused", "intent.skipped")
    ]
    assert not refused, f"the pipeline held back orders the backtest placed: {refused}"
    assert len(research) >= 5, f"{strategy!r} trades {len(research)} times: too few to compare"

    # the same position changes: side and bar of every order
    changes = list(zip(research["ts"], research["side"], strict=True))
    assert list(zip(traded["ts"], traded["side"], strict=True)) == changes
    # each paper order answers the signal of the bar it filled on
    expected_messages = [bar_message_id("replay", SYMBOL, TIMEFRAME, ts) for ts in research["ts"]]
    assert traded["signal_bar_message"].tolist() == expected_messages
    latency = pd.Timedelta(minutes=5) * paper.latency_bars
    assert (traded["filled_on"] == traded["ts"] + latency).all()

    # prices: the backtest fills at the signal bar's close moved by the slippage; the paper
    # broker at the close of the bar `latency_bars` later, moved by the same slippage
    close = sample.set_index("ts")["close"]
    model = [
        fill_model_price(close[ts + latency], side, paper)
        for ts, side in zip(traded["ts"], traded["side"], strict=True)
    ]
    at_signal = [
        fill_model_price(close[ts], side, paper)
        for ts, side in zip(research["ts"], research["side"], strict=True)
    ]
    table = pd.DataFrame(
        {
            "bar": research["ts"],
            "side": research["side"],
            "backtest": research["price"],
            "paper": traded["price"],
            "diff_bps": (traded["price"] / research["price"] - 1) * 10_000,
            "paper_fee_bps": traded["fee_per_unit"] / traded["price"] * 10_000,
            "backtest_fee_bps": research["fee_per_unit"] / research["price"] * 10_000,
        }
    )
    print(
        f"\n{strategy!r} on {BARS} bars of {SYMBOL} {TIMEFRAME}: paper fill model = close of the "
        f"bar {paper.latency_bars} bar(s) after the signal, {paper.slippage_bps:g} bps slippage "
        f"against the order, {paper.fee_bps:g} bps fee; the backtest = the signal bar's close, "
        f"the same slippage and fee. So the prices differ by the close's move over the latency "
        f"({paper.latency_bars} bar(s)): here\n{table.to_string(index=False)}"
    )
    np.testing.assert_allclose(traded["price"], model, rtol=PRICE_RTOL)
    np.testing.assert_allclose(research["price"], at_signal, rtol=PRICE_RTOL)
    allowed = np.abs(np.asarray(model) / np.asarray(at_signal) - 1)
    assert (np.abs(traded["price"] / research["price"] - 1) <= allowed + PRICE_RTOL).all()
    np.testing.assert_allclose(table["paper_fee_bps"], paper.fee_bps, rtol=1e-6)
    np.testing.assert_allclose(table["backtest_fee_bps"], paper.fee_bps, rtol=1e-6)
