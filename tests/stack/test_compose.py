"""docker-compose.yml runs the servers the settings module expects: one Redis per tier with the
tier's policy, and the prod profile's memory limits; deploy/servers.env loads as valid settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tradeos_lab.settings import PROFILES, load_settings
from tradeos_lab.stack.embedded import ROLE_POLICY

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _flags(command: str) -> dict[str, str]:
    return dict(re.findall(r"--([\w-]+) (\S+)", command))


@pytest.mark.parametrize("role", ["bus", "cache", "flags"])
def test_each_redis_tier_has_its_own_server_and_policy(role: str) -> None:
    service = _compose()["services"][f"redis-{role}"]
    flags = _flags(service["command"])
    assert flags["maxmemory-policy"] == ROLE_POLICY[role]
    assert flags["appendonly"] == "yes"
    assert flags["appendfsync"] == "everysec"
    prod = PROFILES["prod"]
    expected_memory = {"bus": None, "cache": prod.cache_maxmemory, "flags": prod.flags_maxmemory}[
        role
    ]
    assert flags.get("maxmemory") == expected_memory


def test_servers_env_is_valid_settings_pointing_at_the_compose_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "servers.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.embedded_parts == []
    assert settings.profile == "prod"
    for role in ("bus", "cache", "flags"):
        url = settings.redis_url(role)  # type: ignore[arg-type]
        host_port = services[f"redis-{role}"]["ports"][0].split(":")[1]
        assert url is not None and f":{host_port}/" in url.get_secret_value()
    assert settings.records_url is not None and ":5433/" in settings.records_url.get_secret_value()
    assert "timescaledb" in services and "clickhouse" in services
