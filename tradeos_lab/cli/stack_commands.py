"""`up`, `status`, `down`: run, inspect and stop the stack."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import click
import psutil

from tradeos_lab.cli.app import CliContext, pass_cli
from tradeos_lab.errors import StackError
from tradeos_lab.observability.logs import configure_logging
from tradeos_lab.stack.runtime import read_runtime


@click.command()
@pass_cli
def up(ctx: CliContext) -> None:
    """Start the stack in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from tradeos_lab.stack.owner import StackOwner

    settings = ctx.settings
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    owner = StackOwner(settings)
    try:
        owner.start()
        click.echo(owner.summary())
        click.echo("press Ctrl-C to stop")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        owner.stop()
    click.echo("stopped")


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


COMMANDS = [up, status, down]
