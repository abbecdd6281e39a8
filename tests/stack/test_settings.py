"""Settings: layered sources, one clear message per bad key, profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradeos_lab.errors import ConfigError
from tradeos_lab.settings import PROFILES, SharedRedisServerWarning, load_settings


def test_defaults_are_the_embedded_dev_profile() -> None:
    s = load_settings()
    assert s.profile == "dev"
    assert s.embedded_parts == ["bus", "cache", "flags", "records", "lake"]
    assert s.limits.stream_maxlen == PROFILES["dev"].stream_maxlen


def test_prod_profile_has_larger_buffers_than_dev() -> None:
    dev, prod = load_settings(profile="dev").limits, load_settings(profile="prod").limits
    assert prod.stream_maxlen > dev.stream_maxlen
    assert prod.dead_letter_maxlen > dev.dead_letter_maxlen


def test_override_beats_profile_value() -> None:
    s = load_settings(profile="prod", stream_maxlen=1234, bar_ttl_1m_seconds=30)
    assert s.limits.stream_maxlen == 1234
    assert s.limits.bar_ttl_seconds["1m"] == 30
    assert s.limits.bar_ttl_seconds["5m"] == 300


def test_layers_file_then_env_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lab.toml"
    config.write_text('[tradeos]\nprofile = "prod"\nnamespace = "fromfile"\nmax_deliveries = 3\n')
    monkeypatch.setenv("TRADEOS_NAMESPACE", "fromenv")
    s = load_settings(config, max_deliveries=9)
    assert s.profile == "prod"  # file
    assert s.namespace == "fromenv"  # env beats file
    assert s.max_deliveries == 9  # override beats all


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "lab.toml"
    config.write_text('namespace = "viaenv"\n')
    monkeypatch.setenv("TRADEOS_CONFIG", str(config))
    assert load_settings().namespace == "viaenv"


def test_unknown_environment_key_is_named_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEOS_BUS_URLL", "redis://localhost")
    with pytest.raises(ConfigError, match=r"unknown setting TRADEOS_BUS_URLL.*TRADEOS_BUS_URL\?"):
        load_settings()


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text("stream_max_len = 5\n")
    with pytest.raises(ConfigError, match="unknown setting stream_max_len in config file"):
        load_settings(config)


def test_bad_value_names_the_key_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEOS_HEALTH_PORT", "99999")
    with pytest.raises(ConfigError, match="invalid setting TRADEOS_HEALTH_PORT") as info:
        load_settings()
    assert "99999" not in str(info.value)


def test_wrong_url_scheme_is_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid setting bus_url"):
        load_settings(bus_url="postgresql://localhost/db")
    with pytest.raises(ConfigError, match="invalid setting lake_url"):
        load_settings(lake_url="redis://localhost")


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text("profile = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.profile = "prod"  # type: ignore[misc]


def test_tiers_on_one_server_warn_that_policies_cannot_differ() -> None:
    with pytest.warns(SharedRedisServerWarning, match="eviction policy is per server"):
        load_settings(
            bus_url="redis://127.0.0.1:6379/0",
            cache_url="redis://127.0.0.1:6379/1",
            flags_url="redis://127.0.0.1:6379/2",
        )


def test_default_data_dir_is_the_nearest_one_upwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".tradeos").mkdir()
    nested = tmp_path / "notebooks" / "research"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert load_settings().data_dir == tmp_path / ".tradeos"


def test_default_data_dir_is_local_when_none_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().data_dir == tmp_path / ".tradeos"
