"""The root command: global options, settings loading and error translation."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tradeos_lab.errors import ConfigError, TradeosError
from tradeos_lab.settings import Settings, load_settings


@dataclass
class CliContext:
    """Options given before the command; settings are built once, on first use."""

    config: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
        return self._settings


pass_cli = click.make_pass_decorator(CliContext)


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM, for a command that runs in the foreground until then."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config", type=click.Path(path_type=Path), help="TOML config file (else $TRADEOS_CONFIG)."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Embedded stack directory (default ./.tradeos).",
)
@click.option(
    "--profile", type=click.Choice(["dev", "prod"]), help="Buffer sizes and TTLs profile."
)
@click.version_option(package_name="tradeos-lab")
@click.pass_context
def cli(
    ctx: click.Context, config: Path | None, data_dir: Path | None, profile: str | None
) -> None:
    """tradeos-lab: a research and paper-trading workbench on Redis streams, records and a lake."""
    overrides = {"data_dir": data_dir, "profile": profile}
    ctx.obj = CliContext(config, {k: v for k, v in overrides.items() if v is not None})


def _register_commands() -> None:
    from tradeos_lab.cli import (
        agent_commands,
        approval_commands,
        apps_commands,
        broker_commands,
        data_commands,
        records_commands,
        research_commands,
        stack_commands,
        tier_commands,
    )

    for command in [
        *stack_commands.COMMANDS,
        *apps_commands.COMMANDS,
        *tier_commands.COMMANDS,
        *approval_commands.COMMANDS,
        *data_commands.COMMANDS,
        *broker_commands.COMMANDS,
        *research_commands.COMMANDS,
        *agent_commands.COMMANDS,
    ]:
        cli.add_command(command)
    cli.add_command(records_commands.records)


_register_commands()


def _show_error(kind: str, error: TradeosError) -> None:
    """The error on one line, what to do about it on the next."""
    click.echo(f"{kind}: {error}", err=True)
    click.echo(f"  {error.action}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: our errors become one readable line, what to do on the next, and a non-zero
    exit (2 for bad settings)."""
    try:
        cli.main(args=argv, prog_name="tradeos-lab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        _show_error("config error", e)
        sys.exit(2)
    except TradeosError as e:
        _show_error("error", e)
        sys.exit(1)
    except SystemExit:
        raise
