"""`approvals`: the intents waiting for an operator, approved or rejected from a terminal through
`tradeos_lab.operator` (audited with the actor and the reason, as the approvals app does)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.cli.tier_commands import actor_option, json_option, reason_option

if TYPE_CHECKING:
    from tradeos_lab import operator
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.flags import ParkedIntent


@contextmanager
def _lab(ctx: CliContext) -> Iterator[Lab]:
    import tradeos_lab as tl

    # Attach only: the queue is on the flags tier, an approval publishes on the bus, and the
    # records answer the kill switch's REDUCING check.
    lab = tl.connect(ctx.settings, parts=("bus", "flags", "records"), start=False)
    try:
        yield lab
    finally:
        lab.close()


def waiting_row(parked: ParkedIntent, now: float) -> dict[str, Any]:
    """One waiting intent as `approvals list` prints it."""
    intent = parked.intent
    return {
        "intent_id": parked.intent_id,
        "strategy": intent.strategy,
        "symbol": intent.symbol,
        "side": intent.side.value,
        "quantity": intent.quantity,
        "notional": round(parked.notional, 2),
        "threshold": parked.threshold,
        "expires_in_s": None if parked.deadline is None else round(parked.deadline - now, 1),
    }


@click.group()
def approvals() -> None:
    """Intents above the active profile's approval threshold, waiting for an operator."""


@approvals.command(name="list")
@json_option
@pass_cli
def list_(ctx: CliContext, as_json: bool) -> None:
    """The intents waiting, soonest deadline first."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        rows = [waiting_row(p, time.time()) for p in operator.pending_approvals(lab)]
    if as_json:
        click.echo(json.dumps(rows))
    elif not rows:
        click.echo("(no intent waits for approval)")
    else:
        for row in rows:
            click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


@approvals.command()
@click.argument("intent_id")
@actor_option
@reason_option
@pass_cli
def approve(ctx: CliContext, intent_id: str, actor: str, reason: str) -> None:
    """Publish a waiting intent on `intents` (not while a kill switch denies it)."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        outcome = operator.approve(lab, intent_id, actor=actor, reason=reason)
    _say(outcome)


@approvals.command()
@click.argument("intent_id")
@actor_option
@reason_option
@pass_cli
def reject(ctx: CliContext, intent_id: str, actor: str, reason: str) -> None:
    """Refuse a waiting intent (on `risk_events` and `audit`)."""
    from tradeos_lab import operator

    with _lab(ctx) as lab:
        outcome = operator.reject(lab, intent_id, actor=actor, reason=reason)
    _say(outcome)


def _say(outcome: operator.ApprovalOutcome) -> None:
    """The outcome on stdout; exit code 1 when nothing was decided."""
    if not outcome.done:
        raise click.ClickException(outcome.detail)
    click.echo(outcome.detail)


COMMANDS = [approvals]
