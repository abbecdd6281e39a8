"""Serving `apps/` with Voila on loopback, for `tradeos-lab apps` and `tradeos-lab up`.

Voila runs in a child process (`python -m tradeos_lab.apps.server DIR --port N`, which dies with
the process that started it) whose kernels load the same settings from the environment
(`settings_environment`, as supervised services do). What a request may reach:
- only the notebooks of `apps/`, rendered with their sources stripped and tracebacks hidden;
- every request carries the token (a new one per run unless the `apps_token` setting gives it);
- no tree and no contents API: Voila's directory listing and its contents handler are removed,
  so nothing outside the rendered apps (and the images of `apps/`) is served.
A page that closes asks Voila to shut its kernel down; a kernel whose page is gone without saying
so stops polling (`live.PageHeartbeat`), goes idle and is culled.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from tradeos_lab.errors import StackError
from tradeos_lab.settings import ENV_PREFIX, Settings

#: The notebooks served, in the order their URLs are printed.
APPS: Final = ("monitor", "kill_switch")
HOST: Final = "127.0.0.1"
#: How the token reaches the server process (Jupyter's own variable; removed before any kernel
#: starts, so no app kernel sees it).
TOKEN_ENV: Final = "JUPYTER_TOKEN"  # noqa: S105 - the name of a variable, not a secret
START_TIMEOUT_S: Final = 60.0
#: An idle kernel (its page gone, its polling stopped) is shut down after this long.
CULL_IDLE_S: Final = 300


def apps_dir() -> Path:
    """`apps/` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "apps"


@dataclass
class ServedApps:
    """A running Voila server process and how to reach each app."""

    process: subprocess.Popen[bytes]
    port: int
    token: str

    def url(self, app: str, *, token: bool = True) -> str:
        query = f"?token={self.token}" if token else ""
        return f"http://{HOST}:{self.port}/voila/render/{app}.ipynb{query}"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def urls(self) -> dict[str, str]:
        return {app: self.url(app) for app in APPS}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: Voila shuts its kernels down, then exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def serve_apps(
    settings: Settings,
    *,
    directory: Path | None = None,
    log: IO[bytes] | None = None,
) -> ServedApps:
    """Start Voila on `directory` (default `apps/`) for the stack of `settings`; returns once it
    accepts connections. Its output goes to `log` (default: discarded)."""
    root = (directory or apps_dir()).resolve()
    if not root.is_dir():
        raise StackError(f"no apps directory at {root}")
    token = (
        settings.apps_token.get_secret_value()
        if settings.apps_token is not None
        else secrets.token_urlsafe(24)
    )
    port = settings.apps_port or _free_port()
    # The kernels load exactly these settings (not the token: no app needs it).
    from tradeos_lab.pipeline.supervisor import settings_environment

    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env.update(settings_environment(settings))
    env.pop(f"{ENV_PREFIX}APPS_TOKEN", None)
    env[TOKEN_ENV] = token
    process = subprocess.Popen(  # noqa: S603 - our interpreter and module, no shell
        [
            sys.executable,
            "-m",
            "tradeos_lab.apps.server",
            str(root),
            "--port",
            str(port),
            "--parent-pid",
            str(os.getpid()),
        ],
        env=env,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    served = ServedApps(process, port, token)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _accepts(port):
        if process.poll() is not None:
            raise StackError(
                f"the apps server exited with code {process.returncode} before serving "
                f"(port {port} taken?)"
            )
        if time.monotonic() > deadline:
            served.stop()
            raise StackError(f"the apps server did not listen on port {port} within 60 s")
        time.sleep(0.1)
    return served


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _voila_argv(directory: str, port: int) -> list[str]:
    return [
        directory,
        f"--port={port}",
        f"--Voila.ip={HOST}",
        "--Voila.port_retries=0",
        "--no-browser",
        "--VoilaConfiguration.strip_sources=True",
        "--VoilaConfiguration.show_tracebacks=False",
        "--MappingKernelManager.cull_interval=60",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
    ]


def main(argv: list[str] | None = None) -> None:
    """The server process: Voila on loopback with the token from `TOKEN_ENV`, without its tree."""
    import argparse

    from voila.app import Voila
    from voila.tornado.contentshandler import VoilaContentsHandler
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.treehandler import TornadoVoilaTreeHandler

    parser = argparse.ArgumentParser(prog="python -m tradeos_lab.apps.server")
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, help="Exit when this process dies.")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        from tradeos_lab.pipeline.supervisor import die_with_supervisor

        die_with_supervisor(args.parent_pid)  # a killed `up` leaves no apps server behind
    token = os.environ.pop(TOKEN_ENV, "")
    if len(token) < 16:
        sys.exit(f"{TOKEN_ENV} must hold the token (at least 16 characters)")

    class AppPage(TornadoVoilaHandler):  # type: ignore[misc]  # voila ships no type information
        """An app's page, which also sets the `_xsrf` cookie: the page sends it back when it
        closes, asking Voila to shut its kernel down (refused without it)."""

        async def prepare(self) -> None:
            await super().prepare()
            if not self._finished:
                self.xsrf_token  # noqa: B018 - tornado sets the cookie on first access

    class AppsServer(Voila):  # type: ignore[misc]
        """Voila serving a directory's notebooks, minus the tree and the contents API."""

        def init_handlers(self) -> list[Any]:
            hidden = (TornadoVoilaTreeHandler, VoilaContentsHandler)
            return [
                (h[0], AppPage, *h[2:]) if h[1] is TornadoVoilaHandler else h
                for h in super().init_handlers()
                if h[1] not in hidden
            ]

    AppsServer.launch_instance(argv=_voila_argv(args.directory, args.port), token=token)


if __name__ == "__main__":
    main()
