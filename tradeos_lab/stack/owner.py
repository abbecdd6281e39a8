"""What `tradeos-lab up` runs: the embedded parts, migrations, `/healthz` + `/metrics`, a
heartbeat and the lake's rollup refresh, for as long as the process lives."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from tradeos_lab.errors import DependencyUnavailable, TradeosError
from tradeos_lab.keys import Keys
from tradeos_lab.observability.health import HealthServer
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.tiers.flags import Flags

log = logging.getLogger(__name__)

# How often the owner settles the lake's pending rollups, so coarse tiers stay current for
# SQL that bypasses `Lake` (every `Lake` read of a coarse tier settles them anyway).
ROLLUP_REFRESH_SECONDS = 2.0


class StackOwner:
    """Owns the embedded stack for one data directory and reports its health."""

    def __init__(self, settings: Settings, service: str = "stack") -> None:
        self.settings = settings
        self.service = service
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self.stack = EmbeddedStack(settings, owner_kind="up") if settings.embedded_parts else None
        self.health: HealthServer | None = None
        self._flags_client: redis.Redis | None = None
        self._flags: Flags | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._refresher: threading.Thread | None = None

    def start(self) -> None:
        from tradeos_lab.stores.records import RecordsStore

        started = time.perf_counter()
        if self.stack is not None:
            self.stack.start()
        if self.settings.records_url is not None:
            RecordsStore.open(self.settings, migrate=True).close()
        self.health = HealthServer(
            self.service, self.check, self.settings.health_host, self.settings.health_port
        ).start()
        if self.stack is not None:
            self.stack.publish_health_url(self.health.url)
        flags_url = (
            self.settings.flags_url.get_secret_value()
            if self.settings.flags_url
            else self.stack.redis_url("flags")
            if self.stack
            else None
        )
        if flags_url:
            self._flags_client = make_redis(
                flags_url, role="flags", settings=self.settings, client_name=self.service
            )
            keys = Keys(self.settings.namespace)
            self._flags = Flags(self._flags_client, keys=keys, settings=self.settings)
            self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            self._heartbeat.start()
        if self.stack is not None and self.stack.lake is not None:
            self._refresher = threading.Thread(
                target=self._refresh_rollups, name="rollup-refresh", daemon=True
            )
            self._refresher.start()
        log.info("stack up", extra={"seconds": round(time.perf_counter() - started, 3)})

    def check(self) -> dict[str, dict[str, Any]]:
        """Dependencies of this process as `/healthz` reports them."""
        parts: dict[str, dict[str, Any]] = {}
        if self.stack is not None:
            parts.update(self.stack.redis_health())
            if self.stack.gateway is not None:
                parts["lake"] = {"state": "up", "gateway": self.stack.gateway.url}
        return parts

    def _beat(self) -> None:
        assert self._flags is not None
        flags = self._flags
        interval = max(1.0, self.settings.limits.heartbeat_ttl_seconds / 3)
        while not self._stop.is_set():
            try:
                flags.workers.heartbeat(
                    self.service,
                    self.instance,
                    {"pid": os.getpid(), "health_url": self.health.url if self.health else ""},
                )
            except DependencyUnavailable:
                # keep beating: status shows the gap, and the next beat may get through
                log.warning("heartbeat failed; the flags tier is unreachable")
            self._stop.wait(interval)

    def _refresh_rollups(self) -> None:
        assert self.stack is not None
        lake = self.stack.lake
        while not self._stop.wait(ROLLUP_REFRESH_SECONDS):
            try:
                settled = lake.refresh_rollups()
            except TradeosError:
                # the next round retries: the spans stay queued until a refresh succeeds
                log.exception("lake rollup refresh failed")
                continue
            if settled:
                log.debug("lake rollups refreshed", extra={"spans": settled})

    def summary(self) -> str:
        lines = [f"tradeos-lab is up (profile {self.settings.profile})"]
        if self.stack is not None:
            lines.append(f"  data dir   {self.stack.data_dir}")
            for role, server in self.stack.servers.items():
                lines.append(
                    f"  {role:<10} redis-server pid {server.pid} on {server.spec.socket_path}"
                )
            lines.append(f"  records    {self.stack.records_url().split('://')[0]} in the data dir")
            if self.stack.gateway is not None:
                lines.append(
                    f"  lake       chdb, served to other processes at {self.stack.gateway.url}"
                )
        if self.health is not None:
            lines.append(
                f"  health     {self.health.url}/healthz  metrics {self.health.url}/metrics"
            )
        return "\n".join(lines)

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._heartbeat, self._refresher):
            if thread is not None:
                thread.join(timeout=30)
        if self._flags is not None:
            with contextlib.suppress(DependencyUnavailable, redis.RedisError):
                self._flags.workers.deregister(self.service, self.instance)
        if self._flags_client is not None:
            self._flags_client.close()
        if self.health is not None:
            self.health.stop()
        if self.stack is not None:
            self.stack.stop()
