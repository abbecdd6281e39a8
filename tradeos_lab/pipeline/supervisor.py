"""One OS process per pipeline service, each restarted with backoff when it dies.

`tradeos-lab up` runs a `Supervisor` beside the stack: every service of the pipeline runs as
`tradeos-lab service NAME` in a process of its own, so a crash (or a SIGKILL) of one stage never
takes the others down, and the supervisor starts it again after an exponential, jittered, capped
delay. The children load the same settings as the supervisor (passed in their environment), write
their JSON logs to `<data_dir>/logs/<service>.log`, and die with the supervisor (Linux parent-death
signal), so nothing is left behind even when the supervisor itself is killed.

The supervisor heartbeats in the flags tier's worker registry as `supervisor`, with the pid and
restart count of every service it runs: `tradeos-lab status` reads them from there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil
from pydantic import SecretStr

from tradeos_lab.errors import TradeosError
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import ENV_PREFIX, Settings
from tradeos_lab.symbols import canonical_name

if TYPE_CHECKING:
    from tradeos_lab.tiers.flags import Workers

log = logging.getLogger(__name__)

#: The supervisor's own name in the worker registry.
SUPERVISOR_SERVICE = "supervisor"
#: Worker-info field holding a service's restart count (`restarts_NAME`) and pid (`pid_NAME`).
RESTARTS_FIELD = "restarts_"
PID_FIELD = "pid_"
#: Worker-info field listing the services the supervisor runs, comma-separated.
SERVICES_FIELD = "services"
#: How often the supervisor looks at its children.
POLL_S = 0.1
#: How long a stopping service may take to finish its batch before it is killed.
STOP_TIMEOUT_S = 15.0


def service_instance(pid: int | None = None) -> str:
    """The worker-instance name of the service process `pid` (this process by default): host and
    pid, so the supervisor can deregister the heartbeat of a child it saw die."""
    return canonical_name(f"{socket.gethostname()}-{os.getpid() if pid is None else pid}")


def log_path(settings: Settings, service: str) -> Path:
    """Where the JSON log lines of one process of the stack go."""
    return settings.data_dir.expanduser().resolve() / "logs" / f"{service}.log"


def settings_environment(settings: Settings) -> dict[str, str]:
    """`TRADEOS_*` variables from which a child process loads exactly `settings`: every field
    that is set, secrets included (the environment of our own child is not a log)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretUrl | SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, Enum):
            text = str(value.value)
        elif isinstance(value, tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, Path):
            text = str(value.expanduser().resolve())
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def service_command(name: str) -> list[str]:
    """The command line of one service process supervised by this process."""
    entry = "import sys; from tradeos_lab.cli import main; main(sys.argv[1:])"
    return [sys.executable, "-c", entry, "service", name, "--supervisor-pid", str(os.getpid())]


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a service that died: `base_s` doubled per consecutive failure up
    to `cap_s`, spread by +/- `jitter` (a fraction) so services that died together do not all
    restart in the same instant. A service that ran `reset_after_s` counts as healthy again."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.2
    reset_after_s: float = 60.0

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait before the restart that follows `failures` consecutive failures."""
        nominal = min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1))
        spread = 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return min(self.cap_s, nominal * spread)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    restart_at: float | None = None
    copier: threading.Thread | None = None


@dataclass
class Supervisor:
    """Runs `services` as child processes and keeps them running until `stop()`."""

    settings: Settings
    services: Sequence[str]
    workers: Workers | None = None
    log_stderr: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    command: Callable[[str], list[str]] = service_command
    #: Told of each restart (service, exit code, restart number), e.g. to audit it.
    on_restart: Callable[[str, int | None, int], None] | None = None

    def __post_init__(self) -> None:
        self._children = {name: _Child(name) for name in self.services}
        self._rng = random.Random()  # noqa: S311 - restart jitter, not a secret
        self._stop = threading.Event()
        # Reentrant: a restart spawns under it, so that `stop()` (which sets the stop flag under
        # it) never races a restart into a process it does not know about.
        self._lock = threading.RLock()
        self._monitor: threading.Thread | None = None
        self._environment = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.upper().startswith(ENV_PREFIX) or k.upper().startswith("TRADEOS_TEST_")
            },
            **settings_environment(self.settings),
        }
        self.instance = service_instance()

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every service and the thread that watches them."""
        for child in self._children.values():
            self._spawn(child)
        self._beat()
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every service (each finishes its batch, acks and exits), SIGKILL what is still
        running after `timeout`, including any process a service started."""
        with self._lock:
            self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        with self._lock:
            processes = [c.process for c in self._children.values() if c.process is not None]
        family: list[psutil.Process] = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(process.pid)
                family += [parent, *parent.children(recursive=True)]
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service did not stop in time; killing it", extra={"pid": process.pid})
        for process in processes:
            _kill_group(process.pid)
        _, alive = psutil.wait_procs(family, timeout=0)
        for straggler in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                straggler.kill()
        psutil.wait_procs(alive, timeout=5)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
        for child in self._children.values():
            if child.copier is not None:
                child.copier.join(timeout=5)
        if self.workers is not None:
            with contextlib.suppress(TradeosError):
                self.workers.deregister(SUPERVISOR_SERVICE, self.instance)

    # ---- what status reads ----------------------------------------------------------------

    def restarts(self) -> dict[str, int]:
        """Restarts per service since `start()`."""
        with self._lock:
            return {name: c.restarts for name, c in self._children.items()}

    def pids(self) -> dict[str, int | None]:
        """The pid of each service's current process (None while it waits for its restart)."""
        with self._lock:
            return {
                name: c.process.pid if c.process is not None and c.process.poll() is None else None
                for name, c in self._children.items()
            }

    def info(self) -> dict[str, str | int]:
        """The supervisor's heartbeat info: its pid, and per service its pid and restarts."""
        out: dict[str, str | int] = {"pid": os.getpid(), SERVICES_FIELD: ",".join(self.services)}
        for name, restarts in self.restarts().items():
            out[f"{RESTARTS_FIELD}{name}"] = restarts
        for name, pid in self.pids().items():
            out[f"{PID_FIELD}{name}"] = pid or 0
        return out

    # ---- inside -------------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        path = log_path(self.settings, child.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command(child.name),
            env=self._environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the supervisor only
        )
        assert process.stderr is not None
        copier = threading.Thread(
            target=_copy_lines,
            args=(process.stderr, path, sys.stderr if self.log_stderr else None),
            name=f"log-{child.name}",
            daemon=True,
        )
        copier.start()
        with self._lock:
            child.process, child.copier = process, copier
            child.started_at, child.restart_at = time.monotonic(), None
        log.info("service started", extra={"supervised": child.name, "pid": process.pid})

    def _watch(self) -> None:
        interval = max(1.0, self.settings.limits.heartbeat_ttl_seconds / 3)
        next_beat = time.monotonic() + interval
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            for child in self._children.values():
                self._check(child, now)
            if now >= next_beat:
                self._beat()
                next_beat = now + interval

    def _check(self, child: _Child, now: float) -> None:
        process = child.process
        if process is not None and child.restart_at is None:
            code = process.poll()
            if code is None:
                return
            ran = now - child.started_at
            child.failures = 1 if ran >= self.backoff.reset_after_s else child.failures + 1
            delay = self.backoff.delay(child.failures, self._rng)
            child.restart_at = now + delay
            log.warning(
                "service died; restarting it",
                extra={
                    "supervised": child.name,
                    "exit_code": code,
                    "restart_in_s": round(delay, 2),
                },
            )
            _kill_group(process.pid)
            self._forget(child.name, process.pid)
            return
        if child.restart_at is not None and now >= child.restart_at:
            code = process.returncode if process is not None else None
            with self._lock:
                if self._stop.is_set():
                    return
                self._spawn(child)
                child.restarts += 1
            self._beat()
            if self.on_restart is not None:
                try:
                    self.on_restart(child.name, code, child.restarts)
                except TradeosError:
                    log.exception("could not record the restart", extra={"supervised": child.name})

    def _forget(self, service: str, pid: int) -> None:
        """Drop the heartbeat of a dead service process, so status does not show a ghost."""
        if self.workers is None:
            return
        try:
            self.workers.deregister(service, service_instance(pid))
        except TradeosError:
            log.warning("could not deregister a dead service", extra={"supervised": service})

    def _beat(self) -> None:
        if self.workers is None:
            return
        try:
            self.workers.heartbeat(SUPERVISOR_SERVICE, self.instance, self.info())
        except TradeosError:
            log.warning("supervisor heartbeat failed; the flags tier is unreachable")


def _copy_lines(source: IO[bytes], path: Path, echo: IO[str] | None) -> None:
    """Append a child's stderr (its JSON log lines, and a traceback if it crashes) to its log
    file, and to `echo` when given, until the child closes it."""
    with path.open("ab") as sink:
        for line in iter(source.readline, b""):
            sink.write(line)
            sink.flush()
            if echo is not None:
                echo.write(line.decode(errors="replace"))
                echo.flush()
    source.close()


def _kill_group(leader: int) -> None:
    """SIGKILL what is left of a service's process group (each service leads its own session),
    so a process the service started does not outlive it, even when the service was killed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)


def restarts_from_info(info: Mapping[str, str]) -> dict[str, int]:
    """Restarts per service from a supervisor's heartbeat info."""
    return {
        key.removeprefix(RESTARTS_FIELD): int(value)
        for key, value in info.items()
        if key.startswith(RESTARTS_FIELD)
    }


def die_with_supervisor(supervisor_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies, and exit at once if the parent is
    already gone: a supervised service never outlives its supervisor (elsewhere, only the check
    at start)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:
        raise SystemExit(0)
