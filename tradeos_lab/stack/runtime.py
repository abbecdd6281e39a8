"""The data directory's shared state: its lock, its password and the runtime file.

One process at a time owns a data directory (an exclusive `flock` on `stack.lock`, released by
the kernel when the owner dies). The owner writes `runtime.json` so other processes (notebooks,
Voila, the CLI) can find its servers. A runtime file is only trusted when its owner is alive and
is the same process that wrote it (pid plus process start time), so a stale file is replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tradeos_lab.errors import DataDirError, StackAlreadyRunning
from tradeos_lab.secrets import register_secret

RUNTIME_FILE = "runtime.json"
LOCK_FILE = "stack.lock"
SECRET_FILE = "secret"  # noqa: S105 - the file name, not a password


#: The data directory holds the bus's messages, the records and the lake: owner-only, always.
OWNER_ONLY_UMASK = 0o077


def prepare_data_dir(path: Path) -> Path:
    """Create the data directory, make it and everything already in it owner-only (a directory
    the user pre-created is often 0755) and prove it is writable."""
    path = path.expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise DataDirError(f"data directory {path} is not writable: {e.strerror or e}") from e
    make_owner_only(path)
    return path


def make_owner_only(root: Path) -> None:
    """Drop group and other permissions from `root` and every file and directory under it
    (symbolic links are left alone: their targets are not ours to change)."""
    try:
        _drop_group_other(root)
        for folder, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                _drop_group_other(Path(folder) / name)
    except OSError as e:
        raise DataDirError(f"cannot make {root} owner-only: {e.strerror or e}") from e


def _drop_group_other(path: Path) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & 0o077:
        path.chmod(stat.S_IMODE(mode) & ~0o077)


def stack_password(data_dir: Path) -> str:
    """The password of this data directory's servers, created once, readable by the owner only."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DataDirError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")
    password = path.read_text().strip()
    register_secret(password)
    return password


@dataclass
class RuntimeInfo:
    """What a running stack tells other processes: where its parts are and who owns it."""

    owner_pid: int
    owner_started: float
    owner_kind: str  # "up" (the CLI) or "process" (a notebook or script that started it)
    data_dir: str
    started_at: float
    redis_sockets: dict[str, str] = field(default_factory=dict)  # role -> unix socket path
    redis_pids: dict[str, int] = field(default_factory=dict)
    records_url: str | None = None  # without its password: this file is not a secret
    lake_gateway: str | None = None
    lake_path: str | None = None  # the chdb directory the gateway serves
    health_url: str | None = None
    version: str = ""

    def lake_gateway_for(self, lake_path: Path) -> str | None:
        """The gateway of this stack's lake when it serves the chdb directory `lake_path`."""
        if self.lake_gateway and self.lake_path == str(lake_path.expanduser().resolve()):
            return self.lake_gateway
        return None

    def redis_url(self, role: str, password: str) -> str:
        from urllib.parse import quote

        return f"unix://:{quote(password, safe='')}@{self.redis_sockets[role]}?db=0"


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def read_runtime(data_dir: Path) -> RuntimeInfo | None:
    """The live stack's runtime info, or None when there is none or the file is stale."""
    path = data_dir / RUNTIME_FILE
    try:
        raw = json.loads(path.read_text())
        info = RuntimeInfo(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # torn or foreign file: never trusted
    started = _process_start(info.owner_pid)
    if started is None or abs(started - info.owner_started) > 1.0:
        return None
    return info


def write_runtime(data_dir: Path, info: RuntimeInfo) -> None:
    """Atomically replace the runtime file (owner-only permissions)."""
    tmp = data_dir / f".{RUNTIME_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(info), fh, indent=2)
    tmp.replace(data_dir / RUNTIME_FILE)


def remove_runtime(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / RUNTIME_FILE).unlink()


def this_process() -> tuple[int, float]:
    pid = os.getpid()
    return pid, _process_start(pid) or time.time()


class DataDirLock:
    """An exclusive, non-blocking `flock` on the data directory, held while the stack runs."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise DataDirError(f"cannot create {self.path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = read_runtime(self.path.parent)
            owner = f"process {info.owner_pid} ({info.owner_kind})" if info else "another process"
            raise StackAlreadyRunning(
                f"the stack in {self.path.parent} is already running, owned by {owner}"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
