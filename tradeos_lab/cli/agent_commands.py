"""`agent ...`: the agent's proposals and their approval, a learning step, the weekly
re-optimisation on demand, the latest weights replayed over recent trades, and a candidate
profile replayed over yesterday's intents.

Every command attaches to the running stack (`start=False`); applied config changes are
announced on the `audit` stream, so running services re-read their config.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from tradeos_lab.cli.app import CliContext, pass_cli

if TYPE_CHECKING:
    from tradeos_lab.contracts import Audit
    from tradeos_lab.lab import Lab


@contextmanager
def _lab(ctx: CliContext) -> Iterator[Lab]:
    import tradeos_lab as tl

    lab = tl.connect(ctx.settings, start=False)
    try:
        yield lab
    finally:
        lab.close()


def _announce(lab: Lab, payload: Audit) -> None:
    from tradeos_lab.contracts import new_message
    from tradeos_lab.keys import Stream

    lab.bus.publish(Stream.AUDIT, new_message(payload, producer="operator"))


def _print(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in rows[0] if rows else ["(none)"]:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


@click.group()
def agent() -> None:
    """The autonomous agent and the learning loop."""


@agent.command()
@click.option("--days", type=click.FloatRange(min=1), default=30.0, show_default=True)
@pass_cli
def reoptimize(ctx: CliContext, days: float) -> None:
    """Re-run the research sweeps on the last DAYS of lake bars and propose the best parameters
    as system config (pending approval when the active profile says so)."""
    from tradeos_lab.agent.reoptimize import reoptimize as run

    with _lab(ctx) as lab:
        done = run(lab, now=datetime.now(UTC), lookback_days=days)
        for item in done:
            _announce(lab, item.announcement)
        _print(
            [
                {
                    "proposal": d.proposal.id,
                    "key": d.proposal.key,
                    "status": d.proposal.status,
                    "value": d.proposal.new_value,
                }
                for d in done
            ],
            f"re-optimisation over {days:g} days",
        )


@agent.command()
@pass_cli
def learn(ctx: CliContext) -> None:
    """One learning-loop step now: the strategy weights before and after, and why."""
    from tradeos_lab.agent.policy import learn as step

    with _lab(ctx) as lab:
        done = step(lab, now=datetime.now(UTC))
    names = sorted(set(done.before) | set(done.after))
    _print(
        [{"strategy": s, "before": done.before.get(s), "after": done.after.get(s)} for s in names],
        ("adjusted: " if done.applied else "held: ") + done.reason,
    )


@agent.command()
@click.option("--status", type=click.Choice(["pending", "applied", "rejected"]), default=None)
@pass_cli
def proposals(ctx: CliContext, status: str | None) -> None:
    """The agent's config proposals, oldest first."""
    with _lab(ctx) as lab:
        found = lab.records.config_proposals(status=status)
    _print(
        [
            {
                "id": p.id,
                "key": p.key,
                "old": p.old_value,
                "new": p.new_value,
                "status": p.status,
                "by": p.proposed_by,
                "at": p.proposed_at.isoformat(timespec="seconds"),
            }
            for p in found
        ],
        "config proposals",
    )


def _decide(ctx: CliContext, proposal_id: int, approve: bool, actor: str, reason: str) -> None:
    from tradeos_lab.agent.config import announcement

    with _lab(ctx) as lab:
        decided = lab.records.decide_config(
            proposal_id, approve=approve, decided_by=actor, reason=reason
        )
        if approve:
            _announce(lab, announcement(lab.records, decided, actor=actor))
    click.echo(f"proposal {decided.id} ({decided.key}) {decided.status} by {actor}")


@agent.command()
@click.argument("proposal_id", type=int)
@click.option("--actor", required=True, help="Who approves (user:NAME).")
@click.option("--reason", required=True)
@pass_cli
def approve(ctx: CliContext, proposal_id: int, actor: str, reason: str) -> None:
    """Apply a pending proposal; running services pick it up from the announcement."""
    _decide(ctx, proposal_id, True, actor, reason)


@agent.command()
@click.argument("proposal_id", type=int)
@click.option("--actor", required=True, help="Who rejects (user:NAME).")
@click.option("--reason", required=True)
@pass_cli
def reject(ctx: CliContext, proposal_id: int, actor: str, reason: str) -> None:
    """Reject a pending proposal; the config stays as it is."""
    _decide(ctx, proposal_id, False, actor, reason)


@agent.command("replay-profile")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Default: yesterday.")
@click.option("--equity", type=click.FloatRange(min=0, min_open=True), default=100_000.0)
@pass_cli
def replay_profile(
    ctx: CliContext, name: str, version: int, day: datetime | None, equity: float
) -> None:
    """Which of a day's intents version VERSION of profile NAME would have denied or resized."""
    from tradeos_lab.agent.replay import Limits, intents_to_replay, profile_replay
    from tradeos_lab.errors import ValidationError

    start_day: date = day.date() if day else datetime.now(UTC).date() - timedelta(days=1)
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=UTC)
    with _lab(ctx) as lab:
        found = lab.records.profile_versions(name, version=version)
        if not found:
            raise ValidationError(f"no version {version} of policy profile {name!r}")
        intents = intents_to_replay(lab.records, start, start + timedelta(days=1))
    frame = profile_replay(intents, Limits.of(found[0]), equity=equity)
    rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]
    _print(rows, f"{name} v{version} over {start_day}")


@agent.command("replay-weights")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@pass_cli
def replay_weights(ctx: CliContext, days: float) -> None:
    """What the last DAYS of closed trades would have made under the latest weight adjustment."""
    from tradeos_lab.agent.replay import daily, recent_trades, weight_replay
    from tradeos_lab.errors import ValidationError

    with _lab(ctx) as lab:
        applied = [a for a in lab.records.weight_adjustments() if a.applied]
        if not applied:
            raise ValidationError("no weight adjustment has been applied yet")
        trades = recent_trades(lab.records, days=days, now=datetime.now(UTC))
    per_day = daily(weight_replay(trades, applied[-1].before, applied[-1].after))
    rows = [
        {
            "day": str(day)[:10],
            "pnl": round(r.pnl, 2),
            "counterfactual": round(r.counterfactual_pnl, 2),
        }
        for day, r in per_day.iterrows()
    ]
    _print(
        rows,
        f"the last {days:g} days under the weights of {applied[-1].adjusted_at:%Y-%m-%d %H:%M}",
    )


COMMANDS = [agent]
