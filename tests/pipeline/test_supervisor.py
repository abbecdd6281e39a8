"""The supervisor: one OS process per service, restarted with backoff, seen in `status`, stopped
without leaving a process behind.

The supervised processes here are small programs that load their settings the way a service
does (from the environment the supervisor gives them) and heartbeat in the real flags tier, so
these tests need no pipeline service to be finished; `test_up*.py` runs the real services."""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tradeos_lab.keys import Keys, Stream
from tradeos_lab.pipeline.supervisor import (
    SUPERVISOR_SERVICE,
    Backoff,
    Supervisor,
    log_path,
    restarts_from_info,
    settings_environment,
)
from tradeos_lab.settings import Settings, SharedRedisServerWarning, load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.status import collect_status
from tradeos_lab.tiers.flags import Flags

# A service stand-in: loads the settings from its environment, heartbeats as the service it was
# started for (instance = host-pid, as a real service), logs one line to stderr, and exits 0 on
# SIGTERM, leaving behind a process it started: the supervisor must stop that one too.
HEARTBEATING_SERVICE = textwrap.dedent(
    """
    import signal, subprocess, sys, threading, warnings
    warnings.simplefilter("ignore")
    from tradeos_lab.settings import load_settings
    from tradeos_lab.keys import Keys, Stream
    from tradeos_lab.stack.clients import make_redis
    from tradeos_lab.tiers.flags import Flags
    from tradeos_lab.pipeline.supervisor import service_instance

    name = sys.argv[1]
    settings = load_settings()
    client = make_redis(settings.flags_url.get_secret_value(), role="flags", settings=settings)
    flags = Flags(client, keys=Keys(settings.namespace), settings=settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"service {name} in namespace {settings.namespace}", file=sys.stderr, flush=True)
    while not stop.is_set():
        flags.workers.heartbeat(name, service_instance(), {"pid": __import__("os").getpid()})
        stop.wait(0.2)
    flags.workers.deregister(name, service_instance())
    """
)


def stand_in(name: str) -> list[str]:
    return [sys.executable, "-c", HEARTBEATING_SERVICE, name]


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def settings(
    settings_factory: Callable[..., Settings], namespace: str, shared_redis_url: str, shared_redis
) -> Settings:
    """The machine's Redis for every tier under this test's namespace (cleaned by
    `shared_redis`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        return settings_factory(
            namespace=namespace,
            bus_url=shared_redis_url,
            cache_url=shared_redis_url,
            flags_url=shared_redis_url,
        )


@pytest.fixture
def flags(settings: Settings) -> Iterator[Flags]:
    assert settings.flags_url is not None
    client = make_redis(settings.flags_url.get_secret_value(), role="flags", settings=settings)
    yield Flags(client, keys=Keys(settings.namespace), settings=settings)
    client.close()


@pytest.fixture
def supervisor(settings: Settings, flags: Flags) -> Iterator[Supervisor]:
    running = Supervisor(
        settings,
        ("ingestion", "positions"),
        workers=flags.workers,
        backoff=Backoff(base_s=0.2, cap_s=1.0),
        command=stand_in,
    )
    running.start()
    yield running
    running.stop()


def service_rows(settings: Settings) -> dict[str, dict[str, object]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        report = collect_status(settings)
    return {
        p.part.split("/")[0]: {
            "state": p.state,
            "restarts": p.restarts,
            "lag": p.lag,
            "pending": p.pending,
            "detail": p.detail,
        }
        for p in report.parts
        if p.kind == "service"
    }


def test_backoff_doubles_per_failure_up_to_the_cap_with_bounded_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0, jitter=0.2)
    rng = random.Random(7)
    for failures, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert min(delays) >= nominal * 0.8
        assert max(delays) <= min(8.0, nominal * 1.2)
        assert len(set(delays)) > 1, "jitter spreads restarts"


def test_child_loads_exactly_the_supervisors_settings_from_its_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRADEOS_CONFIG", raising=False)
    for key, value in settings_environment(settings).items():
        monkeypatch.setenv(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        assert load_settings() == settings


def test_supervisor_restarts_a_sigkilled_service_and_status_shows_one_restart(
    supervisor: Supervisor, settings: Settings
) -> None:
    assert eventually(lambda: service_rows(settings).get("positions", {}).get("state") == "up")
    first = supervisor.pids()["positions"]
    assert first is not None
    psutil.Process(first).send_signal(signal.SIGKILL)

    def restarted() -> bool:
        pid = supervisor.pids()["positions"]
        row = service_rows(settings).get("positions", {})
        return pid not in (None, first) and row.get("state") == "up" and row["restarts"] == 1

    assert eventually(restarted), service_rows(settings)
    assert supervisor.restarts() == {"ingestion": 0, "positions": 1}
    assert service_rows(settings)["ingestion"]["restarts"] == 0


def test_supervisor_heartbeat_carries_the_restarts_of_every_service(
    supervisor: Supervisor, flags: Flags
) -> None:
    pid = supervisor.pids()["ingestion"]
    assert pid is not None
    psutil.Process(pid).kill()
    assert eventually(lambda: supervisor.restarts()["ingestion"] == 1)

    def beat() -> dict[str, int]:
        mine = [w for w in flags.workers.live_workers() if w.service == SUPERVISOR_SERVICE]
        return restarts_from_info(mine[0].info) if mine else {}

    assert eventually(lambda: beat() == {"ingestion": 1, "positions": 0})


def test_stop_leaves_no_service_process_nor_any_process_a_service_started(
    settings: Settings, flags: Flags
) -> None:
    running = Supervisor(
        settings, ("ingestion", "positions"), workers=flags.workers, command=stand_in
    )
    running.start()

    def family() -> list[psutil.Process]:
        # Only the supervisor's own tree: a process another test left in this worker is not ours.
        out: list[psutil.Process] = []
        for pid in running.pids().values():
            if pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    service = psutil.Process(pid)
                    out += [service, *service.children(recursive=True)]
        return out

    assert eventually(lambda: len(family()) == 4), "each service and the helper it started"
    started = family()
    running.stop()
    _, alive = psutil.wait_procs(started, timeout=5)
    assert alive == []
    assert not [w for w in flags.workers.live_workers() if w.service == SUPERVISOR_SERVICE]


def test_each_service_logs_to_its_own_file_under_the_data_directory(
    supervisor: Supervisor, settings: Settings
) -> None:
    path = log_path(settings, "positions")
    assert eventually(lambda: path.exists() and "service positions" in path.read_text())
    assert Path(settings.data_dir, "logs") == path.parent
    assert f"in namespace {settings.namespace}" in path.read_text()


def test_status_shows_a_services_lag_and_pending_entries_from_its_consumer_groups(
    supervisor: Supervisor, settings: Settings, shared_redis: redis.Redis
) -> None:
    keys = Keys(settings.namespace)
    for stream, entries in ((Stream.FILLS_RAW, 3), (Stream.MARKET_DATA, 2)):
        key = keys.stream(stream)
        for i in range(entries):
            shared_redis.xadd(key, {"m": str(i)})
        shared_redis.xgroup_create(key, "positions", id="0")
        shared_redis.xreadgroup("positions", "c1", {key: ">"}, count=1)  # one read, not acked
    assert eventually(lambda: service_rows(settings).get("positions", {}).get("state") == "up")
    row = service_rows(settings)["positions"]
    assert (row["lag"], row["pending"]) == (2 + 1, 1 + 1)
    assert "lag 3, pending 2" in str(row["detail"])
