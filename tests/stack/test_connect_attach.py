"""Attach-only and per-part connects: a kill switch works while the lake or the records are down,
a dashboard never becomes the stack's owner, and a failed connect leaves nothing open."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
from click.testing import CliRunner

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.cli import cli
from tradeos_lab.errors import DependencyUnavailable, PartNotConnected, StackNotRunning
from tradeos_lab.settings import Settings
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.stack.runtime import RUNTIME_FILE

# Nothing listens on port 9 (discard): a lake server and a records database that are down.
DEAD_LAKE = "http://127.0.0.1:9/"
DEAD_RECORDS = "postgresql+psycopg://postgres@127.0.0.1:9/records"


def _live_children() -> set[int]:
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }


@pytest.fixture
def down_stores(settings_factory: Callable[..., Settings]) -> Iterator[Settings]:
    """A running stack whose lake server and records database are unreachable."""
    settings = settings_factory(lake_url=DEAD_LAKE, records_url=DEAD_RECORDS)
    stack = EmbeddedStack(settings)
    stack.start()
    yield settings
    stack.stop()


def _clients_named(settings: Settings, name: str) -> list[str]:
    """Client names starting with `name` on the stack's three redis-servers."""
    from tradeos_lab.stack.runtime import read_runtime, stack_password

    data_dir = settings.data_dir.resolve()
    info = read_runtime(data_dir)
    assert info is not None
    found = []
    for role in ("bus", "cache", "flags"):
        admin = redis.Redis.from_url(info.redis_url(role, stack_password(data_dir)))
        found += [c["name"] for c in admin.client_list() if c["name"].startswith(name)]
        admin.close()
    return found


def test_attach_only_connect_without_a_stack_raises_and_starts_nothing(tmp_path: Path) -> None:
    before = _live_children()
    with pytest.raises(StackNotRunning, match="no stack is running") as raised:
        tl.connect(data_dir=tmp_path / "lab", start=False)
    assert "tradeos-lab up" in raised.value.action
    assert _live_children() == before
    assert not (tmp_path / "lab").exists(), "not even the data directory was created"


def test_flags_and_bus_work_while_the_lake_and_records_are_down(down_stores: Settings) -> None:
    with tl.connect(down_stores, parts=("flags", "bus"), start=False) as lab:
        assert not lab.owns_stack
        operator.arm(lab, actor="user:test", reason="start of day")
        operator.halt(lab, actor="user:test", reason="news spike")
        assert lab.kill_switches.state().mode == "HALTED"
        assert lab.bus.redis.xlen(lab.keys.stream("audit")) == 2
        with pytest.raises(PartNotConnected, match="parts=\\(bus, flags\\); it has no lake"):
            _ = lab.lake
        with pytest.raises(PartNotConnected, match="it has no records"):
            _ = lab.records


def test_parts_open_on_first_use_so_a_down_lake_fails_only_its_own_access(
    down_stores: Settings,
) -> None:
    with tl.connect(down_stores, start=False) as lab:
        assert lab.kill_switches.state().mode == "HALTED"
        with pytest.raises(DependencyUnavailable, match="ClickHouse server"):
            _ = lab.lake
        with pytest.raises(DependencyUnavailable, match="records database does not answer"):
            _ = lab.records
        assert lab.bus.redis.ping()


def test_a_connect_that_fails_half_way_closes_the_clients_it_opened(
    down_stores: Settings, settings_factory: Callable[..., Settings]
) -> None:
    name = f"halfway-{uuid.uuid4().hex[:8]}"
    settings = settings_factory(lake_url=DEAD_LAKE, records_url=DEAD_RECORDS, service_name=name)
    with pytest.raises(DependencyUnavailable, match="ClickHouse server"):
        tl.connect(settings, parts=("bus", "cache", "flags", "lake"), start=False)
    assert _clients_named(settings, name) == []
    # the probe itself sees clients of a lab that stays open
    with tl.connect(settings, parts=("bus", "flags"), start=False):
        assert sorted(_clients_named(settings, name)) == [f"{name}:bus", f"{name}:flags"]


def test_a_connect_that_started_a_stack_and_then_failed_stops_it(tmp_path: Path) -> None:
    before = _live_children()
    with pytest.raises(DependencyUnavailable, match="ClickHouse server"):
        tl.connect(data_dir=tmp_path / "lab", lake_url=DEAD_LAKE, parts=tl.lab.PARTS)
    assert _live_children() == before, "the redis-servers it started are gone"
    assert not (tmp_path / "lab" / RUNTIME_FILE).exists()


def test_unknown_part_names_are_refused(down_stores: Settings) -> None:
    with pytest.raises(ValueError, match="unknown part\\(s\\) lakes"):
        tl.connect(down_stores, parts=("flags", "lakes"), start=False)


def test_flags_halt_from_the_cli_works_while_the_lake_and_records_are_down(
    down_stores: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEOS_LAKE_URL", DEAD_LAKE)
    monkeypatch.setenv("TRADEOS_RECORDS_URL", DEAD_RECORDS)
    data_dir = str(down_stores.data_dir)
    runner = CliRunner()
    result = runner.invoke(cli, ["--data-dir", data_dir, "flags", "halt", "--reason", "spike"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--data-dir", data_dir, "flags", "show", "--json"])
    assert '"mode": "HALTED"' in result.output


@pytest.mark.parametrize(
    "command", [["flags", "show"], ["bus", "streams"], ["subscriptions", "list"], ["lake", "gaps"]]
)
def test_cli_commands_attach_and_never_start_a_stack(tmp_path: Path, command: list[str]) -> None:
    before = _live_children()
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "lab"), *command])
    assert result.exit_code != 0
    assert isinstance(result.exception, StackNotRunning)
    assert _live_children() == before
    assert not (tmp_path / "lab").exists()
