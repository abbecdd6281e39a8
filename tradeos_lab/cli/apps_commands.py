"""`apps`: serve the Voila apps (`apps/`) on loopback against the running stack."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from tradeos_lab.cli.app import CliContext, pass_cli, stop_on_signals
from tradeos_lab.errors import StackNotRunning, TradeosError
from tradeos_lab.settings import Settings

if TYPE_CHECKING:
    from tradeos_lab.apps.server import ServedApps


def apps_banner(urls: dict[str, str]) -> list[str]:
    """The lines `apps` and `up` print: one URL per app, each carrying this run's token."""
    width = max(len(name) for name in urls)
    lines = ["  apps       (the token in these URLs is required; it is printed only here)"]
    lines += [f"    {name.ljust(width)}  {url}" for name, url in urls.items()]
    return lines


def check_stack_running(settings: Settings) -> None:
    """The apps attach to a stack and never start one: say so now rather than in every app."""
    from tradeos_lab.stack.runtime import read_runtime

    if settings.embedded_parts:
        data_dir = settings.data_dir.expanduser().resolve()
        if read_runtime(data_dir) is None:
            raise StackNotRunning(f"no stack is running for {data_dir}: start it with `up`")


def start_apps(settings: Settings) -> ServedApps:
    """The Voila server, its output in `<data_dir>/logs/apps.log`."""
    from tradeos_lab.apps.server import serve_apps
    from tradeos_lab.pipeline.supervisor import log_path

    path = log_path(settings, "apps")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        return serve_apps(settings, log=log)


@contextlib.contextmanager
def apps_beside_up(settings: Settings, *, serve: bool) -> Iterator[list[str]]:
    """What `up` adds for the apps: the server for as long as `up` runs, and the lines to print.
    An apps server that cannot start is said, and the stack runs on without it."""
    if not serve:
        yield ["  apps       not served (--no-apps)"]
        return
    try:
        served = start_apps(settings)
    except (TradeosError, OSError) as e:
        yield [f"  apps       not served: {e}"]
        return
    try:
        yield apps_banner(served.urls())
    finally:
        served.stop()


@click.command()
@pass_cli
def apps(ctx: CliContext) -> None:
    """Serve the monitor and the kill-switch panel (Voila, loopback, token required) against the
    running stack until Ctrl-C or SIGTERM."""
    settings = ctx.settings
    check_stack_running(settings)
    stop = stop_on_signals()
    served = start_apps(settings)
    try:
        for line in apps_banner(served.urls()):
            click.echo(line)
        click.echo("press Ctrl-C to stop", nl=True)
        while not stop.wait(0.5):
            if served.process.poll() is not None:
                raise click.ClickException(
                    f"the apps server exited with code {served.process.returncode}"
                )
    finally:
        served.stop()
    click.echo("stopped")


COMMANDS = [apps]
