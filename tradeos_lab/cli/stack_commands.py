"""`up`, `status`, `down`: run, inspect and stop the stack and its pipeline; `service`: one
pipeline service in the foreground."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
import psutil

from tradeos_lab.cli.app import CliContext, pass_cli, stop_on_signals
from tradeos_lab.errors import ConfigError, StackError, ValidationError
from tradeos_lab.observability.logs import configure_logging
from tradeos_lab.settings import BROKERS, Settings
from tradeos_lab.stack.runtime import read_runtime

if TYPE_CHECKING:
    from tradeos_lab.pipeline.supervisor import Supervisor


@click.command()
@click.option("--feed", help="Market data: synthetic (default), replay:PATH, coinbase or alpaca.")
@click.option("--symbols", help="Comma-separated symbols to trade, e.g. BTC-USD,ETH-USD.")
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    help="A strategy to run (repeatable): a registered name, module:Class or path.py:Class.",
)
@click.option(
    "--broker",
    type=click.Choice(BROKERS, case_sensitive=False),
    help="Where Execution places orders: paper (default) or alpaca (its API keys set).",
)
@click.option("--no-pipeline", is_flag=True, help="Start the servers only, no service.")
@click.option("--no-apps", is_flag=True, help="Do not serve the Voila apps.")
@click.option("--log-stderr", is_flag=True, help="Also write the JSON logs to stderr.")
@pass_cli
def up(
    ctx: CliContext,
    feed: str | None,
    symbols: str | None,
    strategies: tuple[str, ...],
    broker: str | None,
    no_pipeline: bool,
    no_apps: bool,
    log_stderr: bool,
) -> None:
    """Start the stack and the paper-trading pipeline in the foreground; Ctrl-C, SIGTERM or
    `tradeos-lab down` stops all of it."""
    from tradeos_lab.cli.apps_commands import apps_beside_up
    from tradeos_lab.pipeline.supervisor import log_path
    from tradeos_lab.stack.owner import StackOwner

    ctx.overrides.update(
        {
            k: v
            for k, v in {
                "pipeline_feed": feed,
                "pipeline_symbols": symbols,
                "pipeline_strategies": strategies or None,
                "execution_broker": broker,
            }.items()
            if v is not None
        }
    )
    settings = ctx.settings
    if not no_pipeline:
        resolve_strategies(settings.pipeline_strategies)
    log_to_files(settings, "stack", echo=log_stderr)
    stop = stop_on_signals()
    owner = StackOwner(settings)
    try:
        owner.start()
        with (
            _pipeline(settings, run=not no_pipeline, log_stderr=log_stderr) as running,
            apps_beside_up(settings, serve=not no_apps) as apps_lines,
        ):
            click.echo(owner.summary())
            for line in [*running.banner, *apps_lines]:
                click.echo(line)
            click.echo(f"logs in {log_path(settings, 'stack').parent}")
            click.echo("press Ctrl-C to stop")
            sys.stdout.flush()
            running.follow(stop)
    finally:
        owner.stop()
    click.echo("stopped")


class _Running:
    """What `up` runs beside the stack: the supervisor of the services, and on a terminal the
    running summary."""

    def __init__(self, settings: Settings, *, run: bool, log_stderr: bool) -> None:
        import tradeos_lab as tl

        self.settings = settings
        self.lab = tl.connect(settings, start=False)
        self.run, self.log_stderr = run, log_stderr
        self.banner: list[str] = []
        self.supervisor: Supervisor | None = None

    def start(self) -> None:
        """Arm the kill switches on a dev machine, then start the services."""
        from tradeos_lab.pipeline.supervisor import Supervisor
        from tradeos_lab.stack.owner import arm_for_dev, arms_at_start

        settings = self.settings
        if arm_for_dev(self.lab) is not None:
            self.banner.append("  flags      kill switches armed by `up` (dev profile)")
        elif not arms_at_start(settings):
            self.banner.append(
                "  flags      kill switches not armed: orders read HALTED until an operator "
                "runs `tradeos-lab flags arm`"
            )
        if self.run and settings.pipeline_services:
            self.supervisor = Supervisor(
                settings,
                settings.pipeline_services,
                workers=self.lab.flags.workers,
                log_stderr=self.log_stderr,
                on_restart=self._audit_restart,
            )
            self.supervisor.start()
            self.banner.append(
                f"  pipeline   {', '.join(settings.pipeline_services)} on the "
                f"{settings.pipeline_feed} feed: {', '.join(settings.pipeline_symbols)} "
                f"({settings.pipeline_timeframe}) with {', '.join(settings.pipeline_strategies)}"
            )
        else:
            why = "--no-pipeline" if not self.run else "no service in pipeline_services"
            self.banner.append(f"  pipeline   not started ({why})")

    def _audit_restart(self, service: str, exit_code: int | None, restarts: int) -> None:
        from tradeos_lab.contracts import Audit, new_message
        from tradeos_lab.keys import Stream
        from tradeos_lab.stack.owner import UP_ACTOR

        audit = Audit(
            actor=UP_ACTOR,
            action="service.restarted",
            target=f"service:{service}",
            old_value={"exit_code": exit_code},
            new_value={"restarts": restarts},
            reason=f"service {service} died (exit code {exit_code}); restarted by the supervisor",
        )
        self.lab.bus.publish(Stream.AUDIT, new_message(audit, producer="supervisor"))

    def follow(self, stop: threading.Event) -> None:
        """Until `stop`: the running summary while the pipeline runs (in colour on a terminal,
        plain lines in a pipe or a log), else only wait."""
        if self.supervisor is None:
            while not stop.wait(0.5):
                pass
            return
        from rich.console import Console

        from tradeos_lab.pipeline.summary import RunningSummary

        RunningSummary(self.lab, Console(soft_wrap=True)).run(stop)

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        self.lab.close()


@contextlib.contextmanager
def _pipeline(settings: Settings, *, run: bool, log_stderr: bool) -> Iterator[_Running]:
    running = _Running(settings, run=run, log_stderr=log_stderr)
    try:
        running.start()
        yield running
    finally:
        running.close()


def resolve_strategies(refs: tuple[str, ...]) -> None:
    """Import every strategy reference now, so a misspelt one stops `up` with one message
    before anything starts (exit 2), rather than crash-looping the signal engine."""
    from tradeos_lab.strategies import get_strategy

    for ref in refs:
        try:
            get_strategy(ref)
        except ValidationError as e:
            raise ConfigError(f"invalid setting pipeline_strategies (--strategy): {e}") from None


def log_to_files(settings: Settings, service: str, *, echo: bool) -> None:
    """This process's JSON log lines to `<data_dir>/logs/<service>.log`, and to stderr too when
    `echo`: a terminal shows the running summary, not raw JSON."""
    from tradeos_lab.observability.logs import JsonFormatter
    from tradeos_lab.pipeline.supervisor import log_path

    configure_logging(service, settings.log_level, settings.log_format)  # stderr: "tradeos"
    root = logging.getLogger("tradeos_lab")
    path = log_path(settings, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(JsonFormatter(service))
    file_handler.set_name("tradeos-file")
    kept = [
        h
        for h in root.handlers
        if h.get_name() != "tradeos-file" and (echo or h.get_name() != "tradeos")
    ]
    root.handlers = [*kept, file_handler]


@click.command()
@click.argument("name")
@click.option(
    "--supervisor-pid",
    type=int,
    hidden=True,
    help="Run under this supervisor: exit when it dies.",
)
@pass_cli
def service(ctx: CliContext, name: str, supervisor_pid: int | None) -> None:
    """Run one pipeline service (ingestion, signal_engine, signal_modifier, feasibility,
    execution, positions; or module:Class) in the foreground on the running stack; Ctrl-C or
    SIGTERM stops it after its current batch."""
    from tradeos_lab.pipeline.runner import resolve_service, run_service
    from tradeos_lab.pipeline.supervisor import die_with_supervisor, service_instance

    if supervisor_pid is not None:
        die_with_supervisor(supervisor_pid)
    try:
        service_cls = resolve_service(name)
    except ValidationError as e:
        raise ConfigError(str(e)) from None
    settings = ctx.settings
    configure_logging(service_cls.name, settings.log_level, settings.log_format)
    run_service(service_cls, settings, instance=service_instance())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def status(ctx: CliContext, as_json: bool) -> None:
    """Health of every tier and service; exits 1 when something is down."""
    from tradeos_lab.status import collect_status

    report = collect_status(ctx.settings)
    click.echo(report.to_json() if as_json else report.table())
    if not report.ok:
        sys.exit(1)


@click.command()
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the stop.")
@click.option("--force", is_flag=True, help="Also stop a stack owned by a notebook or script.")
@pass_cli
def down(ctx: CliContext, timeout: float, force: bool) -> None:
    """Stop the running stack of this data directory (SIGTERM to its owner)."""
    data_dir = ctx.settings.data_dir.expanduser().resolve()
    info = read_runtime(data_dir)
    if info is None:
        click.echo(f"no stack is running in {data_dir}")
        return
    if info.owner_kind != "up" and not force:
        raise StackError(
            f"the stack in {data_dir} belongs to process {info.owner_pid} ({info.owner_kind}); "
            "close it there with lab.close(), or pass --force"
        )
    os.kill(info.owner_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(info.owner_pid):
        if time.monotonic() > deadline:
            raise StackError(f"process {info.owner_pid} did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    click.echo(f"stopped the stack of process {info.owner_pid}")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited owner whose parent has not reaped it yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


COMMANDS = [up, status, down, service]
