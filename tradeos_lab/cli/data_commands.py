"""`backfill`, `lake gaps`, `lake freshness`, `subscriptions`: market data from the shell.

Every command attaches through `tl.connect(settings, start=False)`, so the lake of a running stack
is reached through its gateway (chdb admits one process per directory) and Redis through its
sockets; with embedded parts and no stack running, the command says to start one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pandas as pd

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.symbols import Timeframe, canonical_symbol

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.providers.base import BarProvider, RateLimiter

TIMEFRAMES = [tf.value for tf in Timeframe]
PROVIDERS = ["synthetic", "coinbase", "alpaca", "file"]


def _symbols(arguments: Iterable[str], option: str | None) -> list[str]:
    """Symbols from positional arguments and/or a comma-separated option, each validated as
    typed and then spelled canonically (`canonical_symbol`: `btc/usd` is `BTC-USD`)."""
    found = [canonical_symbol(s.strip()) for s in arguments]
    if option:
        found += [canonical_symbol(s.strip()) for s in option.split(",") if s.strip()]
    return list(dict.fromkeys(found))


def _table(frame: pd.DataFrame, empty: str) -> str:
    if frame.empty:
        return empty
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return frame.to_string(index=False)


def _connect(ctx: CliContext) -> Lab:
    import tradeos_lab as tl

    # Attach only: a one-shot command never starts (then stops) a stack of its own, and each
    # part opens when the command first uses it.
    return tl.connect(ctx.settings, start=False)


# ---- backfill -----------------------------------------------------------------------------------


def _provider(
    lab: Lab,
    name: str,
    *,
    seed: int,
    file_path: Path | None,
    rate_limit: int | None,
    rate_window: float | None,
) -> tuple[BarProvider, RateLimiter | None]:
    """The provider and the limiter the job calls itself (None when the provider applies the
    shared limiter to each of its own HTTP requests)."""
    from tradeos_lab.marketdata import SharedLimiter

    settings = lab.settings
    if name in ("coinbase", "alpaca"):
        shared = SharedLimiter.for_provider(
            lab.flags, name, limit=rate_limit, window_seconds=rate_window
        )
        if name == "coinbase":
            from tradeos_lab.providers import CoinbaseProvider

            return CoinbaseProvider.from_settings(settings, limiter=shared), None
        from tradeos_lab.providers.alpaca import AlpacaProvider

        return AlpacaProvider.from_settings(settings, limiter=shared), None
    limiter = (
        SharedLimiter.for_provider(lab.flags, name, limit=rate_limit, window_seconds=rate_window)
        if rate_limit is not None
        else None
    )
    if name == "file":
        from tradeos_lab.providers import FileReplayProvider

        if file_path is None:
            raise click.UsageError("--provider file needs --file PATH (CSV or Parquet bars)")
        return FileReplayProvider(file_path), limiter
    from tradeos_lab.providers import SyntheticProvider

    return SyntheticProvider(seed=seed), limiter


@click.command()
@click.argument("symbols", nargs=-1)
@click.option("--symbols", "symbol_list", help="Comma-separated symbols (besides arguments).")
@click.option("-t", "--timeframe", type=click.Choice(TIMEFRAMES), default="1m", show_default=True)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="History to fill, in days (default: setting backfill_history_days, 730).",
)
@click.option("--provider", type=click.Choice(PROVIDERS), default="synthetic", show_default=True)
@click.option(
    "--file",
    "file_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bars file for --provider file (CSV or Parquet).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic provider seed.")
@click.option(
    "--max-symbols",
    type=click.IntRange(min=1),
    help="At most this many symbols in this run; the rest wait for the next --resume.",
)
@click.option("--resume", is_flag=True, help="Continue the job's unfinished pass (same window).")
@click.option("--job", help="Job name (default PROVIDER-TIMEFRAME); one run per job at a time.")
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    help="Requests per --rate-window, shared by every process through the flags tier "
    "(default: the provider's documented limit; none for synthetic and file).",
)
@click.option("--rate-window", type=click.FloatRange(min=0.001), help="Seconds of the rate window.")
@click.option(
    "--chunk-bars",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Bars per provider request (and per checkpoint).",
)
@click.option("--status", "show_status", is_flag=True, help="Show the job's checkpoint and exit.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
@pass_cli
def backfill(
    ctx: CliContext,
    symbols: tuple[str, ...],
    symbol_list: str | None,
    timeframe: str,
    days: int | None,
    provider: str,
    file_path: Path | None,
    seed: int,
    max_symbols: int | None,
    resume: bool,
    job: str | None,
    rate_limit: int | None,
    rate_window: float | None,
    chunk_bars: int,
    show_status: bool,
    progress: bool,
) -> None:
    """Fill the lake's history from a provider, resumably, under a shared rate limit.

    Symbols default to the subscriptions of the timeframe. A killed run continues with
    --resume; holes the provider cannot fill are recorded in the lake's gap ledger.
    Exits 1 when a symbol failed (it stays pending for the next --resume).
    """
    from tradeos_lab.marketdata import Backfill, SubscriptionManager

    chosen = _symbols(symbols, symbol_list)
    with _connect(ctx) as lab:
        source, limiter = _provider(
            lab,
            provider,
            seed=seed,
            file_path=file_path,
            rate_limit=rate_limit,
            rate_window=rate_window,
        )
        job_runner = Backfill.from_lab(
            lab,
            source,
            timeframe,
            job=job,
            limiter=limiter,
            chunk_bars=chunk_bars,
            progress=progress,
        )
        if show_status:
            click.echo(_table(job_runner.status(), f"no checkpoint for job {job_runner.job}"))
            return
        report = job_runner.run(
            chosen or None,
            days=days,
            max_symbols=max_symbols,
            resume=resume,
            subscriptions=SubscriptionManager(lab.cache.redis, keys=lab.keys),
        )
        click.echo(report.summary())
        click.echo(_table(report.frame(), "nothing to do"))
        closer: Any = getattr(source, "close", None)
        if callable(closer):
            closer()
    if not report.ok:
        sys.exit(1)


# ---- lake ---------------------------------------------------------------------------------------


@click.group()
def lake() -> None:
    """Inspect the OHLCV lake: gaps and data freshness."""


@lake.command()
@click.argument("symbols", nargs=-1)
@click.option("-t", "--timeframe", type=click.Choice(TIMEFRAMES), help="Only this timeframe.")
@click.option(
    "--days", type=click.IntRange(min=1), help="Only the last DAYS (default: all stored history)."
)
@click.option(
    "--ledger",
    is_flag=True,
    help="Show the gap ledger (gaps a backfill could not fill) instead of detecting gaps now.",
)
@click.option("--all", "include_filled", is_flag=True, help="With --ledger: filled gaps too.")
@click.option("--list", "as_list", is_flag=True, help="One row per gap instead of a summary.")
@pass_cli
def gaps(
    ctx: CliContext,
    symbols: tuple[str, ...],
    timeframe: str | None,
    days: int | None,
    ledger: bool,
    include_filled: bool,
    as_list: bool,
) -> None:
    """Gaps per symbol and timeframe between each series' first and last stored bar.

    Calendar-naive: every grid point is expected (24/7 markets).
    """
    chosen = _symbols(symbols, None)
    with _connect(ctx) as lab:
        if ledger:
            frame = lab.lake.gap_ledger(timeframe=timeframe, open_only=not include_filled)
            if chosen:
                frame = frame[frame["symbol"].isin(chosen)]
            click.echo(_table(frame.reset_index(drop=True), "the gap ledger is empty"))
            return
        detail, summary = _detect_gaps(lab, chosen, timeframe, days)
    if as_list:
        click.echo(_table(detail, "no gaps"))
    else:
        click.echo(_table(summary, "no bars stored"))


def _detect_gaps(
    lab: Lab, symbols: list[str], timeframe: str | None, days: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    coverage = lab.lake.coverage(symbols or None)
    if timeframe is not None:
        coverage = coverage[coverage["timeframe"] == timeframe]
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days) if days else None
    details: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    series = zip(
        coverage["symbol"].astype(str),
        coverage["timeframe"].astype(str),
        pd.to_datetime(coverage["earliest"], utc=True),
        pd.to_datetime(coverage["latest"], utc=True),
        coverage["bars"].astype("int64"),
        strict=True,
    )
    for symbol, timeframe_name, earliest, latest, bars in series:
        tf = Timeframe.parse(timeframe_name)
        start = earliest if since is None else max(earliest, since)
        end = latest + pd.Timedelta(seconds=tf.seconds)
        found = lab.lake.gaps(symbol, tf, start, end) if start < end else None
        count = 0 if found is None else len(found)
        missing = 0 if found is None or found.empty else int(found["missing_bars"].sum())
        largest = 0 if found is None or found.empty else int(found["missing_bars"].max())
        rows.append(
            {
                "symbol": symbol,
                "timeframe": timeframe_name,
                "bars": int(bars),
                "earliest": earliest,
                "latest": latest,
                "gaps": count,
                "missing_bars": missing,
                "largest_gap_bars": largest,
            }
        )
        if found is not None and not found.empty:
            details.append(found.assign(symbol=symbol, timeframe=timeframe_name))
    columns = ["symbol", "timeframe", "gap_start", "gap_end", "missing_bars"]
    detail = (
        pd.concat(details, ignore_index=True).loc[:, columns]
        if details
        else pd.DataFrame(columns=columns)
    )
    return detail, pd.DataFrame(rows)


@lake.command()
@click.argument("symbols", nargs=-1)
@click.option("-t", "--timeframe", type=click.Choice(TIMEFRAMES), help="Only this timeframe.")
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    show_default=True,
    help="Bars behind after which a series counts as stale.",
)
@click.option("--stale-only", is_flag=True, help="Only stale series.")
@pass_cli
def freshness(
    ctx: CliContext,
    symbols: tuple[str, ...],
    timeframe: str | None,
    stale_after: float,
    stale_only: bool,
) -> None:
    """Latest bar and staleness per symbol and timeframe; subscribed pairs with no bars show too.

    Exits 1 when a series is stale.
    """
    from tradeos_lab.marketdata import SubscriptionManager
    from tradeos_lab.marketdata import freshness as compute

    chosen = _symbols(symbols, None)
    with _connect(ctx) as lab:
        frame = compute(
            lab.lake,
            chosen or None,
            timeframe=timeframe,
            stale_after_bars=stale_after,
            subscriptions=SubscriptionManager(lab.cache.redis, keys=lab.keys),
        )
    if stale_only:
        frame = frame[frame["stale"]]
    click.echo(_table(frame, "no bars stored and no subscriptions"))
    if bool(frame["stale"].any()):
        sys.exit(1)


# ---- subscriptions ------------------------------------------------------------------------------


@click.group()
def subscriptions() -> None:
    """Which symbols and timeframes are needed, and by whom."""


@subscriptions.command("list")
@click.option("--by", "subscriber", help="Only this subscriber's references.")
@pass_cli
def list_subscriptions(ctx: CliContext, subscriber: str | None) -> None:
    """Needed (symbol, timeframe) pairs, or one subscriber's references with --by."""
    from tradeos_lab.marketdata import SubscriptionManager

    with _connect(ctx) as lab:
        manager = SubscriptionManager(lab.cache.redis, keys=lab.keys)
        frame = manager.subscriptions(subscriber) if subscriber else manager.needed()
    click.echo(_table(frame, "no subscriptions"))


@subscriptions.command("add")
@click.argument("subscriber")
@click.argument("symbols", nargs=-1, required=True)
@click.option("-t", "--timeframe", type=click.Choice(TIMEFRAMES), default="1m", show_default=True)
@pass_cli
def add_subscription(
    ctx: CliContext, subscriber: str, symbols: tuple[str, ...], timeframe: str
) -> None:
    """Add one reference of SUBSCRIBER to each symbol."""
    from tradeos_lab.marketdata import SubscriptionManager

    with _connect(ctx) as lab:
        counts = SubscriptionManager(lab.cache.redis, keys=lab.keys).subscribe(
            subscriber, _symbols(symbols, None), timeframe
        )
    for symbol, refs in counts.items():
        click.echo(f"{subscriber} holds {refs} reference(s) to {symbol} {timeframe}")


@subscriptions.command("remove")
@click.argument("subscriber")
@click.argument("symbols", nargs=-1)
@click.option("-t", "--timeframe", type=click.Choice(TIMEFRAMES), default="1m", show_default=True)
@click.option("--all-refs", is_flag=True, help="Drop every reference, not just one.")
@pass_cli
def remove_subscription(
    ctx: CliContext, subscriber: str, symbols: tuple[str, ...], timeframe: str, all_refs: bool
) -> None:
    """Drop one reference of SUBSCRIBER per symbol; with no symbols, release all it holds."""
    from tradeos_lab.marketdata import SubscriptionManager

    with _connect(ctx) as lab:
        manager = SubscriptionManager(lab.cache.redis, keys=lab.keys)
        if not symbols:
            released = manager.unsubscribe_all(subscriber)
            click.echo(f"released {released} pair(s) held by {subscriber}")
            return
        chosen = _symbols(symbols, None)
        left = manager.unsubscribe(subscriber, chosen, timeframe, all_refs=all_refs)
    for symbol, refs in left.items():
        click.echo(f"{subscriber} holds {refs} reference(s) to {symbol} {timeframe}")


COMMANDS = [backfill, lake, subscriptions]
