"""`new_message` and `derive` are typed by one generic signature: payload P in, `Envelope[P]` out.

The type checker is the thing under test here, so these tests run mypy (strict, the project's
config) over small client programs. The package's `__init__` imports the whole lab (`Lab`,
`Settings`); the clients use the contracts alone, so those two modules are not followed, which
keeps a run on a cold cache (a fresh clone) to seconds instead of a minute. The cache directory is
the repository's `.mypy_cache`, which a lint run has usually warmed.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

from mypy import api

from tradeos_lab.contracts import AuditMessage, Bar, BarMessage, derive, new_message

ROOT = Path(__file__).resolve().parents[2]


#: What `tradeos_lab/__init__.py` imports beside the contracts: the clients type-check without it.
NOT_FOLLOWED = ("tradeos_lab.lab", "tradeos_lab.settings")


def _ini_value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _project_config(path: Path) -> Path:
    """The project's mypy config (pyproject.toml) as an ini file, with `NOT_FOLLOWED` skipped."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    overrides = [
        *config.pop("overrides", []),
        {"module": list(NOT_FOLLOWED), "follow_imports": "skip"},
    ]
    lines = ["[mypy]", *(f"{k} = {_ini_value(v)}" for k, v in config.items())]
    for override in overrides:
        lines.append(f"[mypy-{_ini_value(override.pop('module'))}]")
        lines += [f"{k} = {_ini_value(v)}" for k, v in override.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    program = tmp_path / "client.py"
    program.write_text(source)
    out, err, status = api.run(
        [
            "--config-file",
            str(_project_config(tmp_path / "mypy.ini")),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--strict",
            str(program),
        ]
    )
    return out + err, status


def test_generic_code_can_build_and_publish_messages_under_mypy_strict(tmp_path: Path) -> None:
    report, status = _mypy(
        tmp_path,
        """
from typing import TypeVar, assert_type

from tradeos_lab.contracts import Bar, Envelope, Message, Payload, derive, new_message

P = TypeVar("P", bound=Payload)


def wrap(payload: P) -> Envelope[P]:
    return new_message(payload, producer="notebook")


def publish(message: Message) -> None: ...


def use(bar: Bar, answer: Payload) -> None:
    message = new_message(bar, producer="ingestion", correlation_id="run-1")
    assert_type(message.payload, Bar)
    assert_type(message.payload.close, float)
    assert_type(wrap(bar).payload, Bar)
    publish(message)
    publish(derive(message, answer, producer="notebook"))
""",
    )
    assert status == 0, report


def test_mypy_rejects_a_message_used_as_another_payloads_message(tmp_path: Path) -> None:
    report, status = _mypy(
        tmp_path,
        """
from tradeos_lab.contracts import Audit, Bar, Envelope, new_message


def take_audit(message: Envelope[Audit]) -> None: ...


def use(bar: Bar) -> None:
    take_audit(new_message(bar, producer="ingestion"))
""",
    )
    assert status == 1
    assert "[arg-type]" in report and '"Audit"' in report, report


def test_new_message_and_derive_build_the_payloads_message_class() -> None:
    bar = Bar(
        symbol="AAPL",
        timeframe="5m",
        ts=datetime(2024, 3, 15, 14, 30, tzinfo=UTC),
        open=172.5,
        high=173.1,
        low=172.3,
        close=172.95,
        volume=1250430.0,
        source="alpaca",
    )
    message = new_message(bar, producer="ingestion")
    child = derive(message, bar, producer="ingestion")
    assert type(message) is BarMessage and type(child) is BarMessage
    assert child.causation_id == message.message_id
    assert child.correlation_id == message.correlation_id
    assert not isinstance(message, AuditMessage)
