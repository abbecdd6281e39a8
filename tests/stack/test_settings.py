"""Settings: layered sources, one clear message per bad key, profiles."""

from __future__ import annotations

import os
import subprocess
import sys
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
    with pytest.raises(ConfigError, match="needs a directory"):
        load_settings(lake_url="chdb://")


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


# ---- every bad-settings case, as a user meets it: one message, exit code 2, no traceback ----

TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))
# The digits-and-letters piece a password with an unescaped `/` or `#` leaves behind the host.
PASSWORD_TAIL = "98765ZqX"


def _run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    clean.update({"TRADEOS_DATA_DIR": str(tmp_path / "lab"), **env})
    return subprocess.run(
        [TRADEOS_LAB, *args, "status", "--json"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "lab.toml"
    path.write_bytes(content)
    return str(path)


# The cases that printed a traceback or named no key; the others are covered in-process above.
BAD_SETTINGS = {
    "bad port in the bus URL": (
        lambda tmp: ([], {"TRADEOS_BUS_URL": "redis://127.0.0.1:99999/0"}),
        "TRADEOS_BUS_URL",
    ),
    "port that is not a number in the flags URL": (
        lambda tmp: ([], {"TRADEOS_FLAGS_URL": "redis://:pw@127.0.0.1:6x79/0"}),
        "TRADEOS_FLAGS_URL",
    ),
    "TRADEOS_CONFIG names a directory": (
        lambda tmp: ([], {"TRADEOS_CONFIG": str(tmp)}),
        "is a directory",
    ),
    "--config names a directory": (
        lambda tmp: (["--config", str(tmp)], {}),
        "is a directory",
    ),
    "config file that is not UTF-8": (
        lambda tmp: ([], {"TRADEOS_CONFIG": _config(tmp, b'namespace = "caf\xe9"\n')}),
        "is not UTF-8",
    ),
    "bad value in the config file": (
        lambda tmp: ([], {"TRADEOS_CONFIG": _config(tmp, b"max_deliveries = 0\n")}),
        "max_deliveries (config file)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_every_bad_setting_is_one_named_message_and_exit_code_2(tmp_path: Path, case: str) -> None:
    make, named = BAD_SETTINGS[case]
    args, env = make(tmp_path)
    out = _run_cli(tmp_path, *args, **env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert named in out.stderr
    assert out.stderr.count("config error:") == 1
    message, action = out.stderr.splitlines()
    assert ConfigError.action not in message
    assert action.strip() == ConfigError.action
    assert out.stdout == ""
    assert not (tmp_path / "lab").exists(), "nothing was started"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD_TAIL[:5]}/{PASSWORD_TAIL[5:]}@127.0.0.1:6379/0",  # digits before /
        f"redis://:{PASSWORD_TAIL[:5]}#{PASSWORD_TAIL[5:]}@127.0.0.1:6379/0",
        f"unix://:{PASSWORD_TAIL[:4]}+{PASSWORD_TAIL[4:]}/8=@/tmp/bus.sock?db=0",
    ],
)
def test_a_url_with_an_unescaped_slash_or_hash_is_named_and_never_echoed(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigError, match="invalid setting bus_url: the URL does not parse") as e:
        load_settings(bus_url=url)
    assert PASSWORD_TAIL[:4] not in str(e.value)
    assert PASSWORD_TAIL[5:] not in str(e.value)
    if not url.startswith(f"redis://:{PASSWORD_TAIL[:5]}/"):
        return  # one run through the CLI is enough: the message is the same
    out = _run_cli(tmp_path, TRADEOS_BUS_URL=url)
    assert out.returncode == 2
    assert "TRADEOS_BUS_URL" in out.stderr
    for piece in (PASSWORD_TAIL[:4], PASSWORD_TAIL[5:]):
        assert piece not in out.stdout + out.stderr


def test_an_unparsable_url_is_scrubbed_from_logs_whole_and_in_pieces() -> None:
    from tradeos_lab.secrets import scrub

    url = f"redis://:{PASSWORD_TAIL[:5]}/{PASSWORD_TAIL[5:]}@127.0.0.1:6379/0"
    with pytest.raises(ConfigError):
        load_settings(cache_url=url)
    assert PASSWORD_TAIL not in scrub(f"connecting to {url}")
    assert f"{PASSWORD_TAIL[:5]}/{PASSWORD_TAIL[5:]}" not in scrub(url)
