"""`bus` and `flags`: inspect the event streams and hold the kill switches from a terminal."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
import pandas as pd

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.keys import Stream

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab

STREAMS = click.Choice([s.value for s in Stream])


@contextmanager
def _lab(ctx: CliContext) -> Iterator[Lab]:
    import tradeos_lab as tl

    # Attach only, to the two tiers these commands use: a kill switch works while the lake or the
    # records are down, and a command never starts (then stops) a stack of its own.
    lab = tl.connect(ctx.settings, parts=("bus", "flags"), start=False)
    try:
        yield lab
    finally:
        lab.close()


def _show(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        click.echo(
            frame.reset_index().to_json(orient="records", date_format="iso", default_handler=str)
        )
    elif frame.empty:
        click.echo("(none)")
    else:
        with pd.option_context(
            "display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60
        ):
            click.echo(frame.to_string())


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group()
def bus() -> None:
    """Inspect the event bus: streams, groups, pending entries, dead letters."""


@bus.command()
@json_option
@pass_cli
def streams(ctx: CliContext, as_json: bool) -> None:
    """Every pipeline stream: length, first/last entry, groups."""
    with _lab(ctx) as lab:
        _show(lab.bus.inspect.streams(), as_json)


@bus.command()
@click.argument("stream", type=STREAMS, required=False)
@json_option
@pass_cli
def groups(ctx: CliContext, stream: str | None, as_json: bool) -> None:
    """Consumer groups with lag and pending counts."""
    with _lab(ctx) as lab:
        _show(lab.bus.inspect.groups(stream), as_json)


@bus.command()
@click.argument("stream", type=STREAMS)
@click.argument("group")
@json_option
@pass_cli
def pending(ctx: CliContext, stream: str, group: str, as_json: bool) -> None:
    """Pending entries of a group with idle times and delivery counts."""
    with _lab(ctx) as lab:
        _show(lab.bus.inspect.pending(stream, group), as_json)


@bus.command()
@click.argument("stream", type=STREAMS)
@click.option("--count", default=100, show_default=True)
@json_option
@pass_cli
def dlq(ctx: CliContext, stream: str, count: int, as_json: bool) -> None:
    """Dead letters of a stream with their reasons."""
    with _lab(ctx) as lab:
        _show(lab.bus.inspect.dead_letters(stream, count=count), as_json)


@bus.command()
@click.argument("stream", type=STREAMS)
@click.argument("dead_letter_id")
@pass_cli
def replay(ctx: CliContext, stream: str, dead_letter_id: str) -> None:
    """Re-publish a dead letter to its stream (validated first)."""
    with _lab(ctx) as lab:
        click.echo(lab.bus.inspect.replay(stream, dead_letter_id))


@bus.command()
@click.argument("stream", type=STREAMS)
@click.option("--start", default="-", show_default=True)
@click.option("--end", default="+", show_default=True)
@click.option("--count", default=20, show_default=True)
@json_option
@pass_cli
def read(ctx: CliContext, stream: str, start: str, end: str, count: int, as_json: bool) -> None:
    """Entries of a stream as a table."""
    with _lab(ctx) as lab:
        _show(lab.bus.inspect.read(stream, start, end, count=count), as_json)


@click.group()
def flags() -> None:
    """Kill switches: show, halt, clear, arm. Every change is published on `audit`."""


@flags.command()
@json_option
@pass_cli
def show(ctx: CliContext, as_json: bool) -> None:
    """The kill-switch state; unreachable or unarmed reads HALTED."""
    with _lab(ctx) as lab:
        state = lab.kill_switches.state()
    rows = [s.as_dict() for s in state.switches]
    if as_json:
        click.echo(
            json.dumps(
                {"mode": state.mode, "armed": state.armed, "reason": state.reason, "switches": rows}
            )
        )
        return
    click.echo(f"mode: {state.mode or 'TRADING'}  armed: {state.armed}  ({state.reason})")
    _show(pd.DataFrame(rows), False)


actor_option = click.option(
    "--actor", default=lambda: f"user:{getpass.getuser()}", show_default="user:$USER"
)
reason_option = click.option("--reason", required=True, help="Why; kept in the audit trail.")
scope_option = click.option(
    "--scope",
    type=click.Choice(["global", "strategy", "symbol"]),
    default="global",
    show_default=True,
)
target_option = click.option("--target", help="Strategy name or symbol for a scoped switch.")


@flags.command()
@scope_option
@target_option
@click.option(
    "--mode", type=click.Choice(["HALTED", "REDUCING"]), default="HALTED", show_default=True
)
@actor_option
@reason_option
@pass_cli
def halt(
    ctx: CliContext, scope: str, target: str | None, mode: str, actor: str, reason: str
) -> None:
    """Engage a manual kill switch; it holds until cleared explicitly."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        operator.halt(lab, actor=actor, reason=reason, scope=scope, target=target, mode=mode)
    click.echo(f"{mode}: {scope} {target or ''}".rstrip())


@flags.command()
@scope_option
@target_option
@click.option(
    "--source",
    type=click.Choice(["manual", "agent", "reconciliation"]),
    default="manual",
    show_default=True,
)
@actor_option
@reason_option
@pass_cli
def clear(
    ctx: CliContext, scope: str, target: str | None, source: str, actor: str, reason: str
) -> None:
    """Clear one kill switch (audited)."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        record = operator.clear(
            lab, actor=actor, reason=reason, scope=scope, target=target, source=source
        )
    click.echo("cleared" if record.get("cleared") else "no such switch was engaged")


@flags.command()
@actor_option
@reason_option
@pass_cli
def arm(ctx: CliContext, actor: str, reason: str) -> None:
    """Arm the kill-switch registry (a fresh or restarted flags server reads HALTED until armed)."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        operator.arm(lab, actor=actor, reason=reason)
    click.echo("armed")


COMMANDS = [bus, flags]
