"""Serving `apps/` with Voila on loopback, for `tradeos-lab apps` and `tradeos-lab up`.

Voila runs in a child process (`python -m tradeos_lab.apps.server DIR --port N`, which dies with
the process that started it) whose kernels load the same settings from the environment
(`settings_environment`, as supervised services do). What a request may reach:
- only the notebooks of `apps/`, rendered with their sources stripped and tracebacks hidden;
- every request carries the token (a new one per run unless the `apps_token` setting gives it);
  one without it is refused (403): there is no login page to send it to, and none is served;
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from pydantic import SecretStr

from tradeos_lab.errors import StackError
from tradeos_lab.settings import ENV_PREFIX, Settings

#: The notebooks served, in the order their URLs are printed.
APPS: Final = ("monitor", "kill_switch", "approvals")
HOST: Final = "127.0.0.1"
#: How the token reaches the server process (Jupyter's own variable; removed before any kernel
#: starts, so no app kernel sees it).
TOKEN_ENV: Final = "JUPYTER_TOKEN"  # noqa: S105 - the name of a variable, not a secret
#: The settings holding a server's token, kept from every kernel's environment.
TOKEN_SETTINGS: Final = ("apps_token", "lab_token")
START_TIMEOUT_S: Final = 60.0
#: An idle kernel (its page gone, its polling stopped) is shut down after this long.
CULL_IDLE_S: Final = 300


def apps_dir() -> Path:
    """`apps/` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "apps"


@dataclass
class ServerProcess:
    """A Jupyter server child process on loopback and the token every request needs."""

    process: subprocess.Popen[bytes]
    port: int
    token: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: the server shuts its kernels down, then exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


@dataclass
class ServedApps(ServerProcess):
    """The Voila server and how to reach each app."""

    def url(self, app: str, *, token: bool = True) -> str:
        query = f"?token={self.token}" if token else ""
        return f"http://{HOST}:{self.port}/voila/render/{app}.ipynb{query}"

    def urls(self) -> dict[str, str]:
        return {app: self.url(app) for app in APPS}


def serve_apps(
    settings: Settings,
    *,
    directory: Path | None = None,
    log: IO[bytes] | None = None,
) -> ServedApps:
    """Start Voila on `directory` (default `apps/`) for the stack of `settings`; returns once it
    accepts connections. Its output goes to `log` (default: discarded)."""
    process, port, token = start_server(
        "tradeos_lab.apps.server",
        directory or apps_dir(),
        settings=settings,
        token=settings.apps_token,
        port=settings.apps_port,
        log=log,
        what="the apps server",
    )
    return ServedApps(process, port, token)


def start_server(
    module: str,
    directory: Path,
    *,
    settings: Settings,
    token: SecretStr | None,
    port: int,
    log: IO[bytes] | None,
    what: str,
    options: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], int, str]:
    """Run `python -m MODULE DIR --port N --parent-pid P [OPTIONS]` (a server that dies with this
    process) whose kernels load exactly `settings` from the environment, as supervised services
    do, and which reads its token (`token`, else a new one) from `TOKEN_ENV`; returns once it
    accepts connections, with the port and the token."""
    root = directory.resolve()
    if not root.is_dir():
        raise StackError(f"no directory at {root} for {what}")
    secret = token.get_secret_value() if token is not None else secrets.token_urlsafe(24)
    port = port or _free_port()
    from tradeos_lab.pipeline.supervisor import settings_environment

    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env.update(settings_environment(settings))
    for name in TOKEN_SETTINGS:  # no kernel needs a server's token
        env.pop(f"{ENV_PREFIX}{name.upper()}", None)
    env[TOKEN_ENV] = secret
    process = subprocess.Popen(  # noqa: S603 - our interpreter and module, no shell
        [
            *(sys.executable, "-m", module, str(root), "--port", str(port)),
            *("--parent-pid", str(os.getpid()), *options),
        ],
        env=env,
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _accepts(port):
        if process.poll() is not None:
            raise StackError(
                f"{what} exited with code {process.returncode} before serving (port {port} taken?)"
            )
        if time.monotonic() > deadline:
            ServerProcess(process, port, secret).stop()
            raise StackError(f"{what} did not listen on port {port} within 60 s")
        time.sleep(0.1)
    return process, port, secret


@dataclass(frozen=True)
class ServerArguments:
    directory: str
    port: int
    token: str
    #: The `options` of `start_server`, for the server itself.
    options: list[str]


def server_arguments(prog: str, argv: list[str] | None) -> ServerArguments:
    """What a server process started by `start_server` reads: its directory and port, and its
    token (taken out of the environment); it dies with the process that started it."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, help="Exit when this process dies.")
    args, options = parser.parse_known_args(argv)
    if args.parent_pid is not None:
        from tradeos_lab.pipeline.supervisor import die_with_supervisor

        die_with_supervisor(args.parent_pid)  # a killed parent leaves no server behind
    token = os.environ.pop(TOKEN_ENV, "")
    if len(token) < 16:
        sys.exit(f"{TOKEN_ENV} must hold the token (at least 16 characters)")
    return ServerArguments(str(args.directory), int(args.port), token, options)


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
    from jupyter_server.auth.login import LoginFormHandler
    from jupyter_server.auth.logout import LogoutHandler
    from jupyter_server.base.handlers import JupyterHandler
    from tornado.web import HTTPError
    from voila.app import Voila
    from voila.tornado.contentshandler import VoilaContentsHandler
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.treehandler import TornadoVoilaTreeHandler

    args = server_arguments("python -m tradeos_lab.apps.server", argv)
    if args.options:
        sys.exit(f"unknown options: {' '.join(args.options)}")

    class Refused(JupyterHandler):
        """A request without the token is refused, never sent to a login page."""

        def get_login_url(self) -> str:
            raise HTTPError(403)

    def refused(handler: Any) -> Any:
        """`handler` refusing a request without the token instead of redirecting it."""
        if isinstance(handler, type) and issubclass(handler, JupyterHandler):
            return type(handler.__name__, (Refused, handler), {})
        return handler

    class AppPage(Refused, TornadoVoilaHandler):  # type: ignore[misc]  # voila ships no types
        """An app's page, which also sets the `_xsrf` cookie: the page sends it back when it
        closes, asking Voila to shut its kernel down (refused without it)."""

        async def prepare(self, **kwargs: Any) -> None:
            await super().prepare(**kwargs)
            if not self._finished:
                self.xsrf_token  # noqa: B018 - tornado sets the cookie on first access

    class AppsServer(Voila):  # type: ignore[misc]
        """Voila serving a directory's notebooks, minus the tree, the contents API and the login
        and logout pages."""

        def init_handlers(self) -> list[Any]:
            hidden = (
                TornadoVoilaTreeHandler,
                VoilaContentsHandler,
                LoginFormHandler,
                LogoutHandler,
            )
            return [
                (h[0], AppPage if h[1] is TornadoVoilaHandler else refused(h[1]), *h[2:])
                for h in super().init_handlers()
                if not (isinstance(h[1], type) and issubclass(h[1], hidden))
            ]

    AppsServer.launch_instance(argv=_voila_argv(args.directory, args.port), token=args.token)


if __name__ == "__main__":
    main()
