"""Kill switches and bus inspection from the terminal, each change left on the audit stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tradeos_lab as tl
from tradeos_lab.cli import cli
from tradeos_lab.keys import Stream
from tradeos_lab.stack.owner import StackOwner


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A running stack owner, as `tradeos-lab up` would be, so each command attaches quickly."""
    owner = StackOwner(tl.load_settings(data_dir=tmp_path / "lab"))
    owner.start()
    yield tmp_path / "lab"
    owner.stop()


def run(data_dir: Path, *args: str) -> Result:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_a_fresh_flags_tier_reads_halted_until_armed(data_dir: Path) -> None:
    state = json.loads(run(data_dir, "flags", "show", "--json").output)
    assert state["mode"] == "HALTED"
    assert state["armed"] is False
    run(data_dir, "flags", "arm", "--actor", "user:ops", "--reason", "fresh stack")
    state = json.loads(run(data_dir, "flags", "show", "--json").output)
    assert state["armed"] is True
    assert state["mode"] is None


def test_halt_and_clear_are_audited_on_the_audit_stream(data_dir: Path) -> None:
    run(data_dir, "flags", "arm", "--actor", "user:ops", "--reason", "start of day")
    run(data_dir, "flags", "halt", "--actor", "user:ops", "--reason", "news spike")
    assert json.loads(run(data_dir, "flags", "show", "--json").output)["mode"] == "HALTED"
    run(
        data_dir,
        "flags",
        "halt",
        "--scope",
        "symbol",
        "--target",
        "TSLA",
        "--mode",
        "REDUCING",
        "--reason",
        "halted venue",
    )
    run(data_dir, "flags", "clear", "--actor", "user:lead", "--reason", "spike over")
    state = json.loads(run(data_dir, "flags", "show", "--json").output)
    assert state["mode"] is None
    assert [s["target"] for s in state["switches"]] == ["TSLA"]

    with tl.connect(data_dir=data_dir) as lab:
        audit = lab.bus.inspect.read(Stream.AUDIT)
    assert list(audit["payload.action"]) == [
        "kill_switch.armed",
        "kill_switch.engaged",
        "kill_switch.engaged",
        "kill_switch.cleared",
    ]
    cleared = audit.iloc[-1]
    assert cleared["payload.actor"] == "user:lead"
    assert cleared["payload.reason"] == "spike over"
    assert cleared["payload.old_value"]["mode"] == "HALTED"
    rows = json.loads(run(data_dir, "bus", "read", "audit", "--json").output)
    assert len(rows) == 4


def test_bus_inspection_commands_show_streams_and_groups(data_dir: Path) -> None:
    run(data_dir, "flags", "arm", "--reason", "so the audit stream has an entry")
    assert "audit" in run(data_dir, "bus", "streams").output
    with tl.connect(data_dir=data_dir) as lab:
        lab.bus.ensure_group(Stream.AUDIT, "dashboard")
    groups = json.loads(run(data_dir, "bus", "groups", "audit", "--json").output)
    assert groups[0]["group"] == "dashboard"
    assert run(data_dir, "bus", "dlq", "audit").output.strip() == "(none)"


def test_a_halt_without_a_reason_is_refused(data_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "flags", "halt"])
    assert result.exit_code == 2
    assert "--reason" in result.output


def test_a_change_through_the_labs_kill_switches_is_audited_too(data_dir: Path) -> None:
    run(data_dir, "flags", "arm", "--actor", "user:ops", "--reason", "start of day")
    with tl.connect(data_dir=data_dir) as lab:
        lab.kill_switches.engage(
            "strategy", "HALTED", target="momentum", actor="agent:risk", reason="drawdown"
        )
        lab.kill_switches.clear("strategy", target="momentum", actor="agent:risk", reason="ok")
        audit = lab.bus.inspect.read(Stream.AUDIT)
    assert list(audit["payload.action"]) == [
        "kill_switch.armed",
        "kill_switch.engaged",
        "kill_switch.cleared",
    ]
    assert list(audit["payload.actor"])[1:] == ["agent:risk", "agent:risk"]
    assert audit.iloc[1]["payload.target"] == "kill:strategy:momentum"
    assert audit.iloc[2]["payload.old_value"]["reason"] == "drawdown"


def test_a_manual_halt_is_lifted_only_through_the_operator_path(data_dir: Path) -> None:
    run(data_dir, "flags", "arm", "--actor", "user:ops", "--reason", "start of day")
    run(data_dir, "flags", "halt", "--actor", "user:ops", "--reason", "news spike")
    with tl.connect(data_dir=data_dir) as lab:
        lab.kill_switches.clear("global", actor="agent:risk", reason="looks calm to me")
        assert lab.kill_switches.state().mode == "HALTED"
    run(data_dir, "flags", "clear", "--actor", "user:lead", "--reason", "spike over")
    assert json.loads(run(data_dir, "flags", "show", "--json").output)["mode"] is None
