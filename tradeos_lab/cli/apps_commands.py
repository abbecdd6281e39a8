"""`apps`: serve the Voila apps (`apps/`) on loopback against the running stack; `lab`:
JupyterLab on `notebooks/` attached to it the same way."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from tradeos_lab.cli.app import CliContext, pass_cli, stop_on_signals
from tradeos_lab.errors import StackNotRunning, TradeosError
from tradeos_lab.settings import Settings

if TYPE_CHECKING:
    from tradeos_lab.apps.server import ServedApps, ServerProcess


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
    """Serve the monitor, the kill-switch panel and the approval queue (Voila, loopback, token
    required) against the running stack until Ctrl-C or SIGTERM."""
    settings = ctx.settings
    check_stack_running(settings)
    stop = stop_on_signals()
    served = start_apps(settings)
    try:
        for line in apps_banner(served.urls()):
            click.echo(line)
        click.echo("press Ctrl-C to stop", nl=True)
        serve_until_stopped(served, stop, "the apps server")
    finally:
        served.stop()
    click.echo("stopped")


def serve_until_stopped(served: ServerProcess, stop: threading.Event, what: str) -> None:
    """Wait for Ctrl-C or SIGTERM; a server that exits meanwhile is an error."""
    while not stop.wait(0.5):
        if served.process.poll() is not None:
            raise click.ClickException(f"{what} exited with code {served.process.returncode}")


@click.command()
@click.option(
    "--browser/--no-browser",
    default=False,
    show_default=True,
    help="Open the lab's page in this machine's browser.",
)
@click.option(
    "--allow-root",
    is_flag=True,
    help="Run as root (JupyterLab refuses otherwise), e.g. in a container.",
)
@pass_cli
def lab(ctx: CliContext, browser: bool, allow_root: bool) -> None:
    """Serve JupyterLab on `notebooks/` (loopback, token required) whose kernels attach to the
    running stack, until Ctrl-C or SIGTERM (which shuts its kernels down)."""
    from tradeos_lab.apps.jupyterlab import serve_lab
    from tradeos_lab.pipeline.supervisor import log_path

    if os.geteuid() == 0 and not allow_root:
        raise click.ClickException(
            "JupyterLab refuses to run as root: run it as a user, or pass --allow-root"
        )
    settings = ctx.settings
    check_stack_running(settings)
    stop = stop_on_signals()
    path = log_path(settings, "lab")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        served = serve_lab(settings, browser=browser, allow_root=allow_root, log=log)
    try:
        click.echo("  lab        (the token in this URL is required; it is printed only here)")
        click.echo(f"    {served.url}")
        click.echo(f"  log        {path}")
        click.echo("press Ctrl-C to stop", nl=True)
        serve_until_stopped(served, stop, "JupyterLab")
    finally:
        served.stop()
    click.echo("stopped")


COMMANDS = [apps, lab]
