"""JupyterLab on a running stack, for `tradeos-lab lab`: `notebooks/` as its root, on loopback,
behind a token (a new one per run unless the `lab_token` setting gives it).

It runs in a child process started like the apps' Voila server (`server.start_server`): its
kernels load the stack's settings from the environment, so `tl.connect()` in a notebook attaches
to this stack, and it dies with the process that started it. SIGTERM shuts its kernels down
before it exits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tradeos_lab.apps.server import (
    HOST,
    TOKEN_ENV,
    ServerProcess,
    server_arguments,
    start_server,
)
from tradeos_lab.errors import StackError
from tradeos_lab.settings import Settings


def notebooks_dir() -> Path:
    """`notebooks/` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class ServedLab(ServerProcess):
    """A running JupyterLab and its URL."""

    @property
    def url(self) -> str:
        return f"{self.base_url}/lab?token={self.token}"


def serve_lab(
    settings: Settings,
    *,
    directory: Path | None = None,
    browser: bool = False,
    allow_root: bool = False,
    log: IO[bytes] | None = None,
) -> ServedLab:
    """Start JupyterLab on `directory` (default `notebooks/`) for the stack of `settings`;
    returns once it accepts connections. `browser` has it open its page on this machine;
    `allow_root` lets it run as root (it refuses to otherwise)."""
    process, port, token = start_server(
        "tradeos_lab.apps.jupyterlab",
        directory or notebooks_dir(),
        settings=settings,
        token=settings.lab_token,
        port=settings.lab_port,
        log=log,
        what="JupyterLab",
        options=[f"--ServerApp.open_browser={browser}", f"--ServerApp.allow_root={allow_root}"],
    )
    return ServedLab(process, port, token)


def lab_argv(directory: str, port: int) -> list[str]:
    return [
        f"--ServerApp.root_dir={directory}",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_remote_access=False",
    ]


def main(argv: list[str] | None = None) -> None:
    """The server process: JupyterLab on loopback with the token taken from the environment."""
    from jupyterlab.labapp import LabApp

    args = server_arguments("python -m tradeos_lab.apps.jupyterlab", argv)
    # JupyterLab reads its token from the environment as it starts; no kernel inherits it.
    argv = [*lab_argv(args.directory, args.port), *args.options]
    os.environ[TOKEN_ENV] = args.token
    try:
        server = LabApp.initialize_server(argv=argv)
        taken = server.identity_provider.token
    finally:
        os.environ.pop(TOKEN_ENV, None)
    if taken != args.token:
        raise StackError("JupyterLab did not take the token; refusing to serve without it")
    server.start()


if __name__ == "__main__":
    main()
