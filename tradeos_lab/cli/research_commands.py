"""`backtest CONFIG.toml`: a backtest or sweep from a config file, kept in the records;
`promote RUN_ID`: a backtest run's strategy recorded for the paper pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.cli.broker_commands import actor_option


@click.command()
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--record/--no-record", default=True, show_default=True, help="Keep the run.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Rows of a sweep's table, best Sharpe first.",
)
@pass_cli
def backtest(ctx: CliContext, config_path: Path, record: bool, top: int) -> None:
    """Run the backtest (or, with lists of parameter values, the sweep) CONFIG_PATH describes;
    print its metrics and the run id."""
    from rich.console import Console
    from rich.progress import Progress

    from tradeos_lab.research.backtest import Stops, backtest
    from tradeos_lab.research.config import BacktestConfig
    from tradeos_lab.research.market import load_bars
    from tradeos_lab.research.sweep import DEFAULT_CHUNK_CELLS, strategy_class, sweep
    from tradeos_lab.stores.records import RecordsStore

    config = BacktestConfig.load(config_path)
    console = Console()
    records = RecordsStore.open(ctx.settings) if record else None
    try:
        profile = _profile(config, records)
        stops = Stops(**config.stops.model_dump())
        barset = load_bars(
            _bar_source(ctx, config),
            symbols=config.bars.symbols or None,
            timeframe=config.bars.timeframe,
            start=config.bars.start,
            end=config.bars.end,
        )
        if config.is_sweep:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("sweeping", total=None)
                result = sweep(
                    strategy_class(config.strategy),
                    barset,
                    grid=config.parameters,
                    profile=profile,
                    stops=stops,
                    records=records,
                    workers=config.sweep.workers,
                    scheduler=config.sweep.scheduler or ctx.settings.research_scheduler,
                    chunk_cells=config.sweep.chunk_cells or DEFAULT_CHUNK_CELLS,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            table = result.table.sort_values("sharpe", ascending=False).head(top).reset_index()
            console.print(
                _table(table, f"{result.strategy_type.name}: {len(result.table)} combinations")
            )
            run_id, engine = result.run_id, result.engine
        else:
            strategy = strategy_class(config.strategy)(config.parameters)
            with Progress(console=console, transient=True) as bar:
                bar.add_task("backtesting", total=None)
                done = backtest(strategy, barset, profile=profile, stops=stops, records=records)
            console.print(_metrics(done.metrics, repr(strategy)))
            run_id, engine = done.run_id, done.engine
    finally:
        if records is not None:
            records.close()
    click.echo(f"engine: {engine}")
    click.echo(f"run id: {run_id}" if run_id else "run not recorded (--no-record)")


def _profile(config: Any, records: Any) -> Any:
    from tradeos_lab.research.backtest import BacktestProfile

    section = config.profile
    if section.policy is not None:
        from tradeos_lab.errors import ValidationError
        from tradeos_lab.stores.records import RecordsStore

        if records is None:
            raise ValidationError("profile.policy reads the records; drop --no-record")
        assert isinstance(records, RecordsStore)
        base = BacktestProfile.from_records(records, section.policy)
    else:
        base = BacktestProfile()
    given = {k: v for k, v in section.model_dump().items() if k != "policy" and v is not None}
    return BacktestProfile(**{**base.to_dict(), **given})


def _bar_source(ctx: CliContext, config: Any) -> Any:
    if config.bars.source == "file":
        from tradeos_lab.providers import read_bar_file

        symbols = config.bars.symbols
        return read_bar_file(
            config.bars.path,
            symbol=symbols[0] if len(symbols) == 1 else None,
            timeframe=config.bars.timeframe,
        )
    from tradeos_lab.lab import connect

    lab = connect(ctx.settings, parts=("lake",), start=False)
    ctx_closer = click.get_current_context()
    ctx_closer.call_on_close(lab.close)
    return lab.lake


def _metrics(metrics: dict[str, float], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, _cell(name, value))
    return table


def _table(frame: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(str(c), v) for c, v in zip(frame.columns, row, strict=True)))
    return table


def _cell(name: str, value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if name in ("total_return", "cagr", "max_drawdown", "win_rate", "exposure"):
            return f"{value:.2%}"
        if name == "trades":
            return f"{value:.0f}"
        return f"{value:.3f}"
    return str(value)


@click.command()
@click.argument("run_id")
@click.option("--reason", default=None, help="Why (default: the run's metrics).")
@actor_option
@pass_cli
def promote(ctx: CliContext, run_id: str, reason: str | None, actor: str) -> None:
    """Record backtest run RUN_ID's strategy and parameters as the ones to paper trade (the
    records' system config, audited): the stack's Signal Engine runs it from its next bar, its
    signals carrying the run id (in a notebook: `lab.research.promote(RUN_ID)`)."""
    import tradeos_lab as tl
    from tradeos_lab.pipeline.services.signal_engine import PROMOTED_KEY
    from tradeos_lab.research.promote import promote

    lab = tl.connect(ctx.settings, parts=("bus", "records"), start=False)
    try:
        done = promote(lab, run_id, actor=actor, reason=reason)
    finally:
        lab.close()
    click.echo(f"promoted {done.strategy!r} from run {done.run_id} (records: {PROMOTED_KEY})")


COMMANDS = [backtest, promote]
