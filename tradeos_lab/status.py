"""Health of every tier and service, for `tradeos-lab status`, `/healthz` and dashboards.

Each check talks to the real part (PING and policy of each Redis tier, a query on the records and
the lake, the stack owner's `/healthz`, worker heartbeats) and never raises: a failure is a row.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from tradeos_lab.secrets import scrub, scrub_fields
from tradeos_lab.settings import Settings
from tradeos_lab.stack.embedded import ROLE_POLICY
from tradeos_lab.stack.runtime import RuntimeInfo, read_runtime, stack_password

STATUS_TIMEOUT_S = 3.0


@dataclass
class PartStatus:
    """One row of the status table."""

    part: str
    kind: str  # embedded | server | service
    state: str  # up | degraded | down
    target: str = ""
    detail: str = ""
    latency_ms: float | None = None
    # Pipeline services only: seconds since the last heartbeat, entries not yet read (lag) and
    # read but not acked (pending) by the service's consumer groups, restarts by the supervisor.
    heartbeat_age_s: float | None = None
    lag: int | None = None
    pending: int | None = None
    restarts: int | None = None


@dataclass
class StatusReport:
    parts: list[PartStatus]

    @property
    def ok(self) -> bool:
        return all(p.state != "down" for p in self.parts)

    def to_json(self) -> str:
        # Scrubbed per field before encoding: JSON escapes would hide a secret from a later scrub.
        report = {"ok": self.ok, "parts": [asdict(p) for p in self.parts]}
        return json.dumps(scrub_fields(report), indent=2)

    def table(self) -> str:
        rows = [("PART", "KIND", "STATE", "LATENCY", "TARGET", "DETAIL")]
        for p in self.parts:
            latency = f"{p.latency_ms:.1f} ms" if p.latency_ms is not None else "-"
            rows.append(
                (p.part, p.kind, p.state.upper(), latency, scrub(p.target), scrub(p.detail))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
            for r in rows
        ]
        return "\n".join(lines)


def _timed(part: str, kind: str, target: str, check: Callable[[], tuple[str, str]]) -> PartStatus:
    start = time.perf_counter()
    try:
        state, detail = check()
    except Exception as e:
        return PartStatus(part, kind, "down", target, f"{type(e).__name__}: {e}"[:200])
    return PartStatus(part, kind, state, target, detail, (time.perf_counter() - start) * 1000)


def redis_check(url: str, role: str) -> Callable[[], tuple[str, str]]:
    def check() -> tuple[str, str]:
        client = redis.Redis.from_url(
            url, socket_timeout=STATUS_TIMEOUT_S, socket_connect_timeout=STATUS_TIMEOUT_S
        )
        try:
            client.ping()
            version = client.info("server").get("redis_version", "?")
            memory = client.info("memory")
            try:
                policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
            except redis.ResponseError:
                policy = "?"  # managed servers may disable CONFIG
            detail = (
                f"redis {version}, policy {policy}, used {memory.get('used_memory_human', '?')}"
            )
            expected = ROLE_POLICY[role]
            if policy not in (expected, "?"):
                return "degraded", f"{detail}; the {role} tier wants {expected}"
            return "up", detail
        finally:
            client.close()

    return check


def collect_status(settings: Settings) -> StatusReport:
    """Check every part of the stack described by `settings`."""
    parts: list[PartStatus] = []
    data_dir = settings.data_dir.expanduser().resolve()
    info = read_runtime(data_dir) if settings.stack_parts else None
    owner_report: dict[str, Any] = {}
    if settings.embedded_parts:
        if info is None:
            parts.append(
                PartStatus(
                    "stack",
                    "embedded",
                    "down",
                    str(data_dir),
                    "not running: start it with `tradeos-lab up`",
                )
            )
        else:
            owner = _owner_health(info)
            owner_report = owner.get("dependencies", {})
            parts.append(
                PartStatus(
                    "stack",
                    "embedded",
                    "up" if owner else "degraded",
                    str(data_dir),
                    f"owner pid {info.owner_pid} ({info.owner_kind}), version {info.version}",
                )
            )
    password = stack_password(data_dir) if info else ""
    embedded_urls = {r: info.redis_url(r, password) for r in info.redis_sockets} if info else {}
    for role in ("bus", "cache", "flags"):
        url = settings.redis_url(role)
        if url is not None:
            parts.append(
                _timed(role, "server", url.redacted, redis_check(url.get_secret_value(), role))
            )
        elif role in embedded_urls:
            row = _timed(
                role,
                "embedded",
                info.redis_sockets[role] if info else "",
                redis_check(embedded_urls[role], role),
            )
            restarts = owner_report.get(role, {}).get("restarts")
            if restarts:
                row.detail += f"; restarted {restarts}x after dying"
            parts.append(row)
        else:
            parts.append(PartStatus(role, "embedded", "down", "", "stack not running"))
    parts.append(_records_status(settings, info))
    parts.append(_lake_status(settings, info, password))
    parts.extend(_service_rows(settings, embedded_urls))
    return StatusReport(parts)


@dataclass
class _GroupTotals:
    lag: int = 0
    pending: int = 0


def _owner_health(info: RuntimeInfo) -> dict[str, Any]:
    if not info.health_url:
        return {}
    try:
        with urllib.request.urlopen(f"{info.health_url}/healthz", timeout=STATUS_TIMEOUT_S) as r:  # noqa: S310 - loopback URL we wrote
            return dict(json.loads(r.read()))
    except Exception:
        return {}


def _records_status(settings: Settings, info: RuntimeInfo | None) -> PartStatus:
    kind = "server" if settings.records_url else "embedded"
    if kind == "embedded" and info is None:
        return PartStatus("records", kind, "down", "", "stack not running")

    def check() -> tuple[str, str]:
        from tradeos_lab.stores.records import RecordsStore
        from tradeos_lab.stores.records.store import MIGRATE_COMMAND

        store = RecordsStore.open(settings)
        try:
            revision = store.current_revision()
            dialect = store.engine.dialect.name
            timescale = ", timescaledb" if dialect == "postgresql" and store.uses_timescale else ""
            if revision is None:
                return "degraded", f"{dialect}{timescale}, no schema yet: run `{MIGRATE_COMMAND}`"
            if revision != RecordsStore.head_revision():
                return "degraded", (
                    f"{dialect}{timescale}, migration {revision} of "
                    f"{RecordsStore.head_revision()}: run `{MIGRATE_COMMAND}`"
                )
            return "up", f"{dialect}{timescale}, migration {revision}"
        finally:
            store.close()

    target = (
        settings.records_url.redacted
        if settings.records_url
        else str(settings.data_dir / "records.db")
    )
    return _timed("records", kind, target, check)


def _lake_status(settings: Settings, info: RuntimeInfo | None, password: str) -> PartStatus:
    kind = "server" if settings.lake_url else "embedded"
    if kind == "embedded" and (info is None or not info.lake_gateway):
        return PartStatus("lake", kind, "down", "", "stack not running")
    path = settings.chdb_lake_path  # a chdb lake is read through the stack that serves it
    gateway = info.lake_gateway_for(path) if info is not None and path is not None else None

    def check() -> tuple[str, str]:
        from tradeos_lab.stores.lake import Lake

        lake = Lake.open(settings) if gateway is None else Lake.over_gateway(gateway, password)
        try:
            # a probe: settling pending rollups is the owner's work, not a status check's
            version = lake.query("SELECT version() AS v", settle=False)["v"].iloc[0]
            return "up", f"clickhouse {version}"
        finally:
            lake.close()

    target = (
        settings.lake_url.redacted
        if settings.lake_url
        else (info.lake_gateway or "")
        if info
        else ""
    )
    return _timed("lake", kind, target, check)


def _service_rows(settings: Settings, embedded_urls: dict[str, str]) -> list[PartStatus]:
    """Workers seen in the flags tier's registry (up while their heartbeat is fresh), each
    pipeline service with the lag and pending entries of its consumer groups and its restarts,
    and a service the supervisor runs that has no heartbeat (yet) as down."""
    from tradeos_lab.pipeline.supervisor import SERVICES_FIELD, restarts_from_info

    url = (
        settings.flags_url.get_secret_value() if settings.flags_url else embedded_urls.get("flags")
    )
    if url is None:
        return []
    from tradeos_lab.keys import Keys
    from tradeos_lab.tiers.flags import Flags

    client = redis.Redis.from_url(
        url, socket_timeout=STATUS_TIMEOUT_S, socket_connect_timeout=STATUS_TIMEOUT_S
    )
    try:
        flags = Flags(client, keys=Keys(settings.namespace), settings=settings)
        seen = [("up", w) for w in flags.workers.live_workers()] + [
            ("down", w) for w in flags.workers.stale_workers()
        ]
    except Exception:
        return []
    finally:
        client.close()
    restarts: dict[str, int] = {}
    supervised: list[str] = []
    for state, w in seen:
        if w.service == "supervisor" and state == "up":
            restarts.update(restarts_from_info(w.info))
            supervised += [s for s in w.info.get(SERVICES_FIELD, "").split(",") if s]
    groups = _group_totals(settings, embedded_urls)
    rows = []
    for state, w in seen:
        totals = groups.get(w.service)
        detail = f"last heartbeat {w.age_seconds:.1f}s ago, pid {w.info.get('pid', '?')}"
        if totals is not None:
            detail += f", lag {totals.lag}, pending {totals.pending}"
        if w.service in restarts:
            detail += f", restarts {restarts[w.service]}"
        rows.append(
            PartStatus(
                f"{w.service}/{w.instance}",
                "service",
                state,
                w.info.get("health_url", ""),
                detail,
                heartbeat_age_s=round(w.age_seconds, 3),
                lag=totals.lag if totals else None,
                pending=totals.pending if totals else None,
                restarts=restarts.get(w.service),
            )
        )
    beating = {w.service for state, w in seen if state == "up"}
    for name in dict.fromkeys(supervised):
        if name not in beating:
            totals = groups.get(name)
            rows.append(
                PartStatus(
                    name,
                    "service",
                    "down",
                    "",
                    f"no heartbeat: starting, or restarting after a crash "
                    f"(restarts {restarts.get(name, 0)})",
                    lag=totals.lag if totals else None,
                    pending=totals.pending if totals else None,
                    restarts=restarts.get(name, 0),
                )
            )
    return sorted(rows, key=_service_order)


def _service_order(row: PartStatus) -> tuple[int, str]:
    """The stack's own workers first, then the pipeline's services in pipeline order."""
    from tradeos_lab.settings import PIPELINE_SERVICES

    order = ("stack", "supervisor", *PIPELINE_SERVICES)
    service = row.part.split("/")[0]
    return (order.index(service) if service in order else len(order), row.part)


def _group_totals(settings: Settings, embedded_urls: dict[str, str]) -> dict[str, _GroupTotals]:
    """Lag and pending entries per consumer group (a service's name), summed over the streams it
    reads; empty when the bus cannot be read."""
    from tradeos_lab.keys import Keys
    from tradeos_lab.tiers.bus import Bus

    url = settings.bus_url.get_secret_value() if settings.bus_url else embedded_urls.get("bus")
    if url is None:
        return {}
    client = redis.Redis.from_url(
        url, socket_timeout=STATUS_TIMEOUT_S, socket_connect_timeout=STATUS_TIMEOUT_S
    )
    totals: dict[str, _GroupTotals] = {}
    try:
        frame = Bus(client, keys=Keys(settings.namespace), settings=settings).inspect.groups()
        columns = (frame[c].tolist() for c in ("group", "lag", "pending"))
        for name, lag, pending in zip(*columns, strict=True):
            group = totals.setdefault(str(name), _GroupTotals())
            group.lag += int(lag)
            group.pending += int(pending)
    except Exception:
        return {}
    finally:
        client.close()
    return totals
