"""`reconcile` and `orders cancel-all`: the records against the brokers, and the operator's
lever to cancel every open order, from a terminal."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.operator import BROKERS

if TYPE_CHECKING:
    from tradeos_lab.brokers.reconcile import Reconciliation
    from tradeos_lab.lab import Lab

PIPE_WIDTH = 200
EXIT_MISMATCHED = 1
EXIT_UNKNOWN = 3
"""`reconcile`: the broker did not report, so nothing could be compared."""


@contextmanager
def _lab(ctx: CliContext) -> Iterator[Lab]:
    import tradeos_lab as tl

    # The parts a broker and its audit need; never starts (then stops) a stack of its own.
    lab = tl.connect(ctx.settings, parts=("bus", "cache", "flags", "records"), start=False)
    try:
        yield lab
    finally:
        lab.close()


def _text(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value.strip()


actor_option = click.option(
    "--actor",
    default=lambda: f"user:{getpass.getuser()}",
    show_default="user:$USER",
    callback=_text,
    help="Who acts; kept in the audit trail.",
)


@click.command()
@click.option("--broker", type=click.Choice(BROKERS), default="paper", show_default=True)
@click.option(
    "--apply/--dry-run",
    default=True,
    show_default=True,
    help="Import, advance and halt (default), or only show the differences.",
)
@click.option(
    "--lookback-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="How far back closed orders are compared.",
)
@actor_option
@pass_cli
def reconcile(ctx: CliContext, broker: str, apply: bool, lookback_hours: float, actor: str) -> None:
    """Compare the records with a broker and print the differences; exits 1 while mismatches
    remain, 3 when the broker did not report (nothing is taken as flat)."""
    from datetime import timedelta

    from tradeos_lab.brokers.reconcile import PRODUCER, reconcile
    from tradeos_lab.contracts import AuditMessage
    from tradeos_lab.keys import Stream
    from tradeos_lab.operator import audit_sink, stack_brokers
    from tradeos_lab.tiers.flags import KillSource, KillSwitches

    with _lab(ctx) as lab, stack_brokers(lab, (broker,)) as (venue,):
        switches = KillSwitches(
            lab.flags.redis,
            keys=lab.keys,
            source=KillSource.RECONCILIATION,
            audit=audit_sink(lab.bus, producer=PRODUCER),
        )
        result = reconcile(
            lab.records,
            venue,
            switches=switches,
            apply=apply,
            actor=actor,
            lookback=timedelta(hours=lookback_hours),
        )
        for message in result.messages:
            stream = Stream.AUDIT if isinstance(message, AuditMessage) else Stream.RISK_EVENTS
            lab.bus.publish(stream, message)
    _print(result)
    if result.outcome == "unknown":
        sys.exit(EXIT_UNKNOWN)
    if result.remaining:
        sys.exit(EXIT_MISMATCHED)


def _print(result: Reconciliation) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = PIPE_WIDTH  # a pipe or a log: keep each row on one line
    mode = "applied" if result.applied else "dry run"
    console.print(f"broker {result.broker}: {result.outcome.value} ({mode})")
    if result.reason:
        console.print(result.reason)
    if result.differences:
        table = Table("kind", "symbol", "order", "records", "broker", "action", "resolved")
        for d in result.differences:
            table.add_row(
                d.kind.value,
                d.symbol,
                d.client_order_id or "",
                d.records,
                d.broker,
                d.action,
                "yes" if d.resolved else "no",
            )
        console.print(table)
    for label, symbols in (("halted REDUCING", result.halted), ("halt lifted", result.cleared)):
        if symbols:
            console.print(f"{label}: {', '.join(symbols)}")


@click.group()
def orders() -> None:
    """Orders at the brokers."""


@orders.command("cancel-all")
@click.option("--reason", required=True, callback=_text, help="Why; kept in the audit trail.")
@click.option("--broker", type=click.Choice([*BROKERS, "all"]), default="all", show_default=True)
@actor_option
@pass_cli
def cancel_all(ctx: CliContext, reason: str, broker: str, actor: str) -> None:
    """Cancel every open order at the broker(s), audited; goes out whatever the kill switches
    say. Exits 1 when a broker could not be reached."""
    from tradeos_lab import operator

    names: tuple[str, ...] = BROKERS
    if broker != "all":
        names = (broker,)
    elif not operator.broker_configured(ctx.settings, "alpaca"):
        click.echo("alpaca: no API keys configured, skipped", err=True)
        names = tuple(n for n in BROKERS if n != "alpaca")
    with _lab(ctx) as lab, operator.stack_brokers(lab, names) as brokers:
        outcomes = operator.cancel_all(lab, brokers, actor=actor, reason=reason)
    for outcome in outcomes:
        if outcome.error is not None:
            click.echo(f"{outcome.broker}: not canceled: {outcome.error}", err=True)
        else:
            click.echo(f"{outcome.broker}: {len(outcome.client_order_ids)} canceled")
            for cid in outcome.client_order_ids:
                click.echo(f"  {cid}")
    if any(o.error is not None for o in outcomes):
        sys.exit(1)


COMMANDS = [reconcile, orders]
