"""What `tradeos-lab up` runs: the embedded parts, migrations, `/healthz` + `/metrics`, a
heartbeat, the flags tier's upkeep (kill-switch refresh, reaping of stale workers) and the lake's
rollup refresh, for as long as the process lives; and, on a development machine, the kill
switches armed at start so the pipeline trades at once."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from tradeos_lab.errors import DependencyUnavailable, TradeosError
from tradeos_lab.keys import Keys
from tradeos_lab.observability.health import HealthServer
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.tiers.flags import Flags, KillSource, KillSwitches

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab

log = logging.getLogger(__name__)

#: The actor `up` acts as in the audit trail.
UP_ACTOR = "stack:up"

# How often the owner settles the lake's pending rollups, so coarse tiers stay current for
# SQL that bypasses `Lake` (every `Lake` read of a coarse tier settles them anyway).
ROLLUP_REFRESH_SECONDS = 2.0
# How often the owner refreshes the kill switches (expired agent switches dropped and audited, the
# registry's TTL pushed out) and reaps stale workers.
FLAGS_UPKEEP_SECONDS = 2.0
# A worker silent for this many heartbeat TTLs leaves the registry; until then status shows it down.
REAP_AFTER_HEARTBEAT_TTLS = 10


class StackOwner:
    """Owns the embedded stack for one data directory and reports its health."""

    def __init__(self, settings: Settings, service: str = "stack") -> None:
        self.settings = settings
        self.service = service
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self.stack = EmbeddedStack(settings, owner_kind="up") if settings.stack_parts else None
        self.health: HealthServer | None = None
        self._flags_client: redis.Redis | None = None
        self._flags: Flags | None = None
        self._kill_switches: KillSwitches | None = None
        self._bus_client: redis.Redis | None = None
        self._upkeep: threading.Thread | None = None
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
            self._kill_switches = self._switches(keys)
            if self._kill_switches is not None:
                self._upkeep = threading.Thread(
                    target=self._keep_flags, name="flags-upkeep", daemon=True
                )
                self._upkeep.start()
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

    def _switches(self, keys: Keys) -> KillSwitches | None:
        """Kill switches whose changes (expiries dropped by `refresh`) go to the `audit` stream;
        None without a bus to audit on."""
        from tradeos_lab.operator import audit_sink
        from tradeos_lab.tiers.bus import Bus

        bus_url = (
            self.settings.bus_url.get_secret_value()
            if self.settings.bus_url
            else self.stack.redis_url("bus")
            if self.stack
            else None
        )
        if bus_url is None or self._flags_client is None:
            return None
        self._bus_client = make_redis(
            bus_url, role="bus", settings=self.settings, client_name=self.service
        )
        bus = Bus(self._bus_client, keys=keys, settings=self.settings)
        return KillSwitches(
            self._flags_client,
            keys=keys,
            source=KillSource.AGENT,
            audit=audit_sink(bus, producer=self.service),
        )

    def _keep_flags(self) -> None:
        """Refresh the kill switches and reap stale workers every `FLAGS_UPKEEP_SECONDS`."""
        assert self._flags is not None
        assert self._kill_switches is not None
        flags, switches = self._flags, self._kill_switches
        reap_after = REAP_AFTER_HEARTBEAT_TTLS * self.settings.limits.heartbeat_ttl_seconds
        armed: bool | None = None
        while not self._stop.wait(FLAGS_UPKEEP_SECONDS):
            try:
                now_armed = switches.refresh()
                if armed is not False and not now_armed:  # said once, when it happens
                    log.warning("kill-switch registry is not armed: every order reads HALTED")
                armed = now_armed
                for worker in flags.workers.reap_stale(max_age_seconds=reap_after):
                    log.info(
                        "reaped a stale worker",
                        extra={"worker": f"{worker.service}/{worker.instance}"},
                    )
            except TradeosError:
                # the next round retries; checks fail closed meanwhile
                log.exception("flags upkeep failed")

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
            if "records" in self.settings.embedded_parts:
                scheme = self.stack.records_url().split("://")[0]
                lines.append(f"  records    {scheme} in the data dir")
            if self.stack.gateway is not None:
                where = "" if self.settings.lake_url is None else f" in {self.stack.lake_path()}"
                lines.append(
                    f"  lake       chdb{where}, served to other processes at "
                    f"{self.stack.gateway.url}"
                )
        if self.health is not None:
            lines.append(
                f"  health     {self.health.url}/healthz  metrics {self.health.url}/metrics"
            )
        return "\n".join(lines)

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._heartbeat, self._upkeep, self._refresher):
            if thread is not None:
                thread.join(timeout=30)
        if self._flags is not None:
            with contextlib.suppress(DependencyUnavailable, redis.RedisError):
                self._flags.workers.deregister(self.service, self.instance)
        if self._flags_client is not None:
            self._flags_client.close()
        if self._bus_client is not None:
            self._bus_client.close()
        if self.health is not None:
            self.health.stop()
        if self.stack is not None:
            self.stack.stop()


def arms_at_start(settings: Settings) -> bool:
    """Whether `up` arms the kill switches itself: only for the embedded flags tier of the `dev`
    profile, a laptop's own stack. A production stack reads HALTED until an operator runs
    `tradeos-lab flags arm`, so a restart never lets orders flow unseen."""
    return settings.profile == "dev" and "flags" in settings.embedded_parts


def arm_for_dev(lab: Lab) -> dict[str, Any] | None:
    """Arm the kill switches through the operator path (audited as `stack:up`) when
    `arms_at_start`; None when the profile leaves arming to an operator."""
    from tradeos_lab import operator

    if not arms_at_start(lab.settings):
        return None
    return operator.arm(
        lab,
        actor=UP_ACTOR,
        reason="dev profile on the embedded stack: armed at start so the paper pipeline trades",
    )
