"""Where Execution trades: the broker chosen in the settings (file, environment, `up --broker`),
reaching every service process `up` starts; an unknown name or Alpaca without its keys refused
at start with a message naming the setting."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from tradeos_lab.cli.app import cli
from tradeos_lab.errors import ConfigError
from tradeos_lab.pipeline.supervisor import settings_environment
from tradeos_lab.settings import load_settings

KEYS = {"alpaca_api_key": "PKTESTKEY0123456789", "alpaca_secret_key": "s3cr3t-0123456789abcdef"}


def test_the_paper_broker_by_default_and_alpaca_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().execution_broker == "paper"
    monkeypatch.setenv("TRADEOS_EXECUTION_BROKER", "Alpaca")
    monkeypatch.setenv("TRADEOS_ALPACA_API_KEY", KEYS["alpaca_api_key"])
    monkeypatch.setenv("TRADEOS_ALPACA_SECRET_KEY", KEYS["alpaca_secret_key"])
    monkeypatch.setenv("TRADEOS_EXECUTION_RECONCILE_INTERVAL_S", "15")
    settings = load_settings()
    assert (settings.execution_broker, settings.execution_reconcile_interval_s) == ("alpaca", 15)


def test_the_choice_reaches_the_service_processes_with_the_keys_never_in_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = load_settings(execution_broker="alpaca", **KEYS)
    assert KEYS["alpaca_secret_key"] not in repr(chosen)
    env = settings_environment(chosen)
    for name in [n for n in os.environ if n.startswith("TRADEOS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.execution_broker == "alpaca"
    assert child.alpaca_secret_key is not None
    assert child.alpaca_secret_key.get_secret_value() == KEYS["alpaca_secret_key"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"execution_broker": "ibkr"}, "unknown broker 'ibkr'; choose one of paper, alpaca"),
        ({"execution_broker": "alpaca"}, "execution_broker alpaca needs alpaca_api_key"),
        ({"execution_reconcile_interval_s": 0}, "execution_reconcile_interval_s"),
    ],
)
def test_a_bad_broker_setting_is_refused_at_start_naming_it(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        load_settings(**overrides)


def test_up_refuses_an_unknown_broker_before_starting_anything() -> None:
    result = CliRunner().invoke(cli, ["up", "--broker", "ibkr"])
    assert result.exit_code == 2
    assert "'ibkr' is not one of 'paper', 'alpaca'" in result.output
