"""The embedded default: a real redis-server per Redis tier, SQLite records and a chdb lake, all
under one data directory, owned by one process.

The owner holds the data directory's lock, supervises its redis-servers (a killed one is logged,
counted and restarted from its AOF), serves the lake to other processes through the lake gateway
(chdb admits one process per directory) and publishes `runtime.json` for the others to find it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from tradeos_lab import __version__
from tradeos_lab.errors import StackError
from tradeos_lab.secrets import url_without_password
from tradeos_lab.settings import Settings
from tradeos_lab.stack.redis_server import RedisServerProcess, RedisServerSpec, socket_path_for
from tradeos_lab.stack.runtime import (
    OWNER_ONLY_UMASK,
    DataDirLock,
    RuntimeInfo,
    prepare_data_dir,
    remove_runtime,
    stack_password,
    this_process,
    write_runtime,
)

log = logging.getLogger(__name__)

REDIS_RESTARTS = Counter(
    "tradeos_embedded_redis_restarts", "Embedded redis-servers restarted after dying", ["role"]
)

#: Eviction policy each Redis tier needs; checked on external servers by `status` too.
ROLE_POLICY = {"bus": "noeviction", "cache": "allkeys-lru", "flags": "volatile-ttl"}
#: Stop order: the bus last, so consumers can still ack while the others go down.
STOP_ORDER = ("flags", "cache", "bus")


def redis_spec(settings: Settings, data_dir: Path, role: str, password: str) -> RedisServerSpec:
    """The server one tier needs. All three keep an AOF: the bus for its messages, flags so a
    manual halt survives a restart, the cache so dashboards do not go blank."""
    directory = data_dir / "redis" / role
    limits = settings.limits
    maxmemory = {"bus": None, "cache": limits.cache_maxmemory, "flags": limits.flags_maxmemory}
    return RedisServerSpec(
        role=role,
        directory=directory,
        password=password,
        policy=ROLE_POLICY[role],
        maxmemory=maxmemory[role],
        appendonly=True,
        appendfsync="everysec",
        socket_path=socket_path_for(directory, role),
    )


class EmbeddedStack:
    """Starts, supervises and stops the embedded parts for one data directory."""

    def __init__(self, settings: Settings, owner_kind: str = "process") -> None:
        self.settings = settings
        self.owner_kind = owner_kind
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.lock = DataDirLock(self.data_dir)
        self.servers: dict[str, RedisServerProcess] = {}
        self.lake: Any = None
        self.gateway: Any = None
        self.password = ""
        self.info: RuntimeInfo | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._saved_umask: int | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> RuntimeInfo:
        """Start every embedded part. While the stack runs, this process's umask is owner-only:
        chdb writes the lake's files from this process (and SQLite the records, the
        redis-servers their AOFs), and the umask is the one control over the mode they get."""
        self._saved_umask = os.umask(OWNER_ONLY_UMASK)
        try:
            prepare_data_dir(self.data_dir)
            self.lock.acquire()
        except BaseException:
            self._restore_umask()
            raise
        try:
            self.password = stack_password(self.data_dir)
            roles = [r for r in ("bus", "cache", "flags") if r in self.settings.embedded_parts]
            # The servers boot while the records migrate and chdb opens: start-up takes the
            # slowest of them, not their sum.
            for role in roles:
                spec = redis_spec(self.settings, self.data_dir, role, self.password)
                self.servers[role] = RedisServerProcess(spec)
                self.servers[role].launch()
            records_url = self.records_url()
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="stack-start") as pool:
                pending = [pool.submit(self._migrate_records)]
                if "lake" in self.settings.stack_parts:
                    pending.append(pool.submit(self._open_lake))
                for server in self.servers.values():
                    server.wait_ready()
                for task in pending:
                    task.result()
            pid, started = this_process()
            self.info = RuntimeInfo(
                owner_pid=pid,
                owner_started=started,
                owner_kind=self.owner_kind,
                data_dir=str(self.data_dir),
                started_at=time.time(),
                redis_sockets={r: str(s.spec.socket_path) for r, s in self.servers.items()},
                redis_pids={r: s.pid or 0 for r, s in self.servers.items()},
                # Other processes take a password from their own settings, never from this file.
                records_url=url_without_password(records_url),
                lake_gateway=self.gateway.url if self.gateway else None,
                lake_path=str(self.lake_path()) if self.gateway else None,
                version=__version__,
            )
            write_runtime(self.data_dir, self.info)
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name="stack-supervisor", daemon=True
        )
        self._supervisor.start()
        log.info("embedded stack started", extra={"data_dir": str(self.data_dir), "parts": roles})
        return self.info

    def publish_health_url(self, url: str) -> None:
        """Record where this owner serves /healthz so `status` can read it."""
        if self.info is not None:
            self.info.health_url = url
            write_runtime(self.data_dir, self.info)

    def stop(self) -> None:
        """Stop everything this stack started; safe to call twice."""
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)
        if self.gateway is not None:
            self.gateway.shutdown()
            self.gateway = None
        if self.lake is not None:
            self.lake.close()
            self.lake = None
        for role in STOP_ORDER:
            server = self.servers.pop(role, None)
            if server is not None:
                server.stop()
        if self.lock.held:
            remove_runtime(self.data_dir)
            self.lock.release()
        self._restore_umask()
        log.info("embedded stack stopped", extra={"data_dir": str(self.data_dir)})

    def _restore_umask(self) -> None:
        if self._saved_umask is not None:
            os.umask(self._saved_umask)
            self._saved_umask = None

    # ---- parts ----------------------------------------------------------------------------

    def records_url(self) -> str:
        if self.settings.records_url is not None:
            return self.settings.records_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'records.db'}"

    def _migrate_records(self) -> None:
        if "records" in self.settings.embedded_parts:
            from tradeos_lab.stores.records import RecordsStore

            RecordsStore.open(self.settings, migrate=True).close()

    def lake_path(self) -> Path:
        """The directory of the chdb lake this stack owns."""
        path = self.settings.chdb_lake_path
        assert path is not None  # the stack owns a lake only on chdb (`Settings.stack_parts`)
        return path.resolve()

    def _open_lake(self) -> None:
        from tradeos_lab.stores.lake import Lake, serve_gateway

        self.lake = Lake.open(self.settings)
        self.gateway = serve_gateway(self.lake, token=self.password, host="127.0.0.1", port=0)

    def redis_url(self, role: str) -> str:
        return self.servers[role].url

    # ---- supervision ----------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.wait(0.25):
            for role, server in list(self.servers.items()):
                if server.alive() or self._stopping.is_set():
                    continue
                code = server.process.returncode if server.process else None
                log.error(
                    "embedded redis-server died; restarting from its AOF",
                    extra={"role": role, "exit_code": code},
                )
                REDIS_RESTARTS.labels(role=role).inc()
                try:
                    server.restart()
                    if self.info is not None:
                        self.info.redis_pids[role] = server.pid or 0
                        write_runtime(self.data_dir, self.info)
                except StackError:
                    log.exception("restart of the %s redis-server failed", role)

    def redis_health(self) -> dict[str, dict[str, Any]]:
        """Process-level state of each embedded server (the wire checks live in `status`)."""
        return {
            role: {
                "state": "up" if s.alive() else "down",
                "pid": s.pid,
                "restarts": s.restarts,
            }
            for role, s in self.servers.items()
        }
