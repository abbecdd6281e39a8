"""The embedded stack: real redis-servers per tier, the data directory lock, the runtime file."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tradeos_lab.errors import DataDirError, PortInUseError, StackAlreadyRunning
from tradeos_lab.observability.health import HealthServer
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.stack.runtime import RUNTIME_FILE, read_runtime

# The lake has its own tests; these use a server URL for it so only the Redis tiers are embedded.
NO_LAKE = {"lake_url": "http://127.0.0.1:9/", "records_url": None}


@pytest.fixture
def stack(settings_factory: Callable[..., Settings]) -> Iterator[EmbeddedStack]:
    s = EmbeddedStack(settings_factory(lake_url=NO_LAKE["lake_url"]))
    s.start()
    yield s
    s.stop()


def _wait(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_each_tier_runs_its_own_server_with_its_policy(stack: EmbeddedStack) -> None:
    expected = {
        "bus": ("noeviction", "0"),
        "cache": ("allkeys-lru", str(256 * 1024 * 1024)),
        "flags": ("volatile-ttl", str(64 * 1024 * 1024)),
    }
    pids = set()
    for role, (policy, maxmemory) in expected.items():
        client = make_redis(stack.redis_url(role), role=role)
        config = client.config_get("*")
        assert config["maxmemory-policy"] == policy
        assert config["maxmemory"] == maxmemory
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["port"] == "0", "embedded servers listen on a unix socket only"
        pids.add(client.info("server")["process_id"])
        client.close()
    assert len(pids) == 3


def test_servers_refuse_clients_without_the_password(stack: EmbeddedStack) -> None:
    anonymous = redis.Redis(unix_socket_path=str(stack.servers["bus"].spec.socket_path))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_password_file_is_owner_only_and_kept_across_restarts(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(**NO_LAKE)
    first = EmbeddedStack(settings)
    first.start()
    password = first.password
    first.stop()
    secret = settings.data_dir.resolve() / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    second = EmbeddedStack(settings)
    second.start()
    try:
        assert second.password == password
    finally:
        second.stop()


def test_stop_leaves_no_process_and_no_runtime_file(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(**NO_LAKE)
    s = EmbeddedStack(settings)
    info = s.start()
    pids = list(info.redis_pids.values())
    assert all(psutil.pid_exists(p) for p in pids)
    s.stop()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    assert not (settings.data_dir / RUNTIME_FILE).exists()
    s.stop()  # twice is harmless


def test_second_stack_on_the_same_data_dir_is_refused(
    stack: EmbeddedStack, settings_factory: Callable[..., Settings]
) -> None:
    with pytest.raises(StackAlreadyRunning, match=f"owned by process {os.getpid()}"):
        EmbeddedStack(settings_factory(**NO_LAKE)).start()
    assert all(s.alive() for s in stack.servers.values()), "the running stack is untouched"


def test_stale_runtime_file_is_never_trusted_and_is_replaced(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(**NO_LAKE)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True)
    dead = psutil.Popen(["true"])
    dead.wait()
    stale = {
        "owner_pid": dead.pid,
        "owner_started": time.time() - 100,
        "owner_kind": "up",
        "data_dir": str(data_dir),
        "started_at": time.time() - 100,
        "redis_sockets": {"bus": "/nonexistent.sock"},
    }
    (data_dir / RUNTIME_FILE).write_text(json.dumps(stale))
    assert read_runtime(data_dir) is None
    s = EmbeddedStack(settings)
    info = s.start()
    try:
        assert read_runtime(data_dir) == info
        assert info.owner_pid == os.getpid()
    finally:
        s.stop()


def test_runtime_file_of_a_reused_pid_is_not_trusted(
    settings_factory: Callable[..., Settings],
) -> None:
    data_dir = settings_factory().data_dir.resolve()
    data_dir.mkdir(parents=True)
    # Our own pid, but a different process start time: a pid reused after the owner died.
    foreign = {
        "owner_pid": os.getpid(),
        "owner_started": psutil.Process().create_time() - 3600,
        "owner_kind": "up",
        "data_dir": str(data_dir),
        "started_at": 0,
    }
    (data_dir / RUNTIME_FILE).write_text(json.dumps(foreign))
    assert read_runtime(data_dir) is None
    (data_dir / RUNTIME_FILE).write_text("{torn")
    assert read_runtime(data_dir) is None


def test_unwritable_data_dir_is_a_clear_error(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError, match="is not writable"):
        EmbeddedStack(settings_factory(data_dir=blocker / "lab", **NO_LAKE)).start()


def test_health_port_already_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"{port} is already in use"):
            HealthServer("test", dict, port=port)


def test_embedded_redis_port_already_in_use_is_a_clear_error(tmp_path: Path) -> None:
    from tradeos_lab.stack.redis_server import RedisServerProcess, RedisServerSpec

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = RedisServerProcess(
            RedisServerSpec(
                role="bus",
                directory=tmp_path / "r",
                password="x" * 16,
                policy="noeviction",
                port=port,
            )
        )
        with pytest.raises(PortInUseError, match=str(port)):
            server.start()
    assert not server.alive()


def test_sigkilled_server_is_restarted_and_loses_nothing(stack: EmbeddedStack) -> None:
    bus = make_redis(stack.redis_url("bus"), role="bus")
    ids = [bus.xadd("probe", {"n": i}) for i in range(500)]
    # With appendfsync everysec, Redis may hold back the AOF write for up to 2 s while a slow
    # disk finishes an earlier fsync: the loss a bus server accepts. What reached the file must
    # survive the kill.
    _wait(lambda: int(bus.info("persistence")["aof_buffer_length"]) == 0)
    old_pid = stack.servers["bus"].pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    def restarted_and_recorded() -> bool:
        # the supervisor rewrites the runtime file once the new server answers
        info = read_runtime(stack.data_dir)
        server = stack.servers["bus"]
        return (
            server.pid != old_pid
            and server.alive()
            and info is not None
            and info.redis_pids["bus"] == server.pid
        )

    _wait(restarted_and_recorded)
    entries = bus.xrange("probe")
    assert [e[0] for e in entries] == ids
    assert stack.redis_health()["bus"]["restarts"] == 1
    assert read_runtime(stack.data_dir).redis_pids["bus"] == stack.servers["bus"].pid  # type: ignore[union-attr]
    bus.close()


def test_bus_survives_a_restart_of_the_stack(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(**NO_LAKE)
    s = EmbeddedStack(settings)
    s.start()
    bus = make_redis(s.redis_url("bus"), role="bus")
    bus.xadd("durable", {"k": "v"})
    bus.close()
    s.stop()
    s2 = EmbeddedStack(settings)
    s2.start()
    try:
        bus = make_redis(s2.redis_url("bus"), role="bus")
        assert bus.xlen("durable") == 1
        bus.close()
    finally:
        s2.stop()


def test_deep_data_dir_gets_a_short_private_socket(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "lab"
    s = EmbeddedStack(settings_factory(data_dir=deep, **NO_LAKE))
    s.start()
    try:
        sock = s.servers["bus"].spec.socket_path
        assert sock is not None
        assert len(str(sock)) <= 107
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert make_redis(s.redis_url("bus"), role="bus").ping()
    finally:
        s.stop()


def _group_or_other_accessible(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for path in (Path(folder), *(Path(folder) / n for n in (*dirs, *files))):
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{stat.S_IMODE(mode):o} {path.relative_to(root)}")
    return sorted(set(found))


def test_a_pre_created_world_readable_data_dir_and_all_it_holds_become_owner_only(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    import pandas as pd

    data_dir = tmp_path / "lab"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    (data_dir / "notes.txt").write_text("left by the user")
    (data_dir / "notes.txt").chmod(0o644)
    umask_before = os.umask(0o022)
    os.umask(umask_before)
    s = EmbeddedStack(settings_factory(data_dir=data_dir))
    s.start()
    try:
        bus = make_redis(s.redis_url("bus"), role="bus")
        bus.xadd("probe", {"n": 1})
        bus.close()
        start = pd.Timestamp.now(tz="UTC").floor("1D") - pd.Timedelta(days=1)
        s.lake.write_bars(
            pd.DataFrame(
                {
                    "symbol": "AAPL",
                    "timeframe": "1m",
                    "ts": pd.date_range(start, periods=5, freq="1min"),
                    "open": 1.0,
                    "high": 2.0,
                    "low": 0.5,
                    "close": 1.5,
                    "volume": 10.0,
                }
            )
        )
        assert (data_dir / "records.db").exists()
        assert list((data_dir / "redis" / "bus").glob("appendonly*"))
        assert _group_or_other_accessible(data_dir) == []
    finally:
        s.stop()
    assert _group_or_other_accessible(data_dir) == []
    assert os.umask(umask_before) == umask_before, "the process umask is restored at stop"
