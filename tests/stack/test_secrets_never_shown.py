"""A planted broker key and URL password appear in no repr, no serialised settings, no log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tradeos_lab.observability.logs import JsonFormatter, TextFormatter, correlation
from tradeos_lab.secrets import SecretUrl, redact_url
from tradeos_lab.settings import load_settings

FAKE_KEY = "PKFAKEBROKERKEY0123456789"
FAKE_SECRET = "sEcReT-fake-broker-secret-9876"
FAKE_PASSWORD = "hunter2-redis-password"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRADEOS_ALPACA_API_KEY", FAKE_KEY)
    monkeypatch.setenv("TRADEOS_ALPACA_SECRET_KEY", FAKE_SECRET)
    monkeypatch.setenv("TRADEOS_BUS_URL", f"redis://default:{FAKE_PASSWORD}@10.0.0.5:6379/0")
    return load_settings()


def _leaks(text: str) -> list[str]:
    return [s for s in (FAKE_KEY, FAKE_SECRET, FAKE_PASSWORD) if s in text]


def test_repr_str_and_dump_hide_every_secret(planted) -> None:  # type: ignore[no-untyped-def]
    shown = [repr(planted), str(planted), planted.model_dump_json(), str(planted.model_dump())]
    for text in shown:
        assert _leaks(text) == [], text
    assert planted.bus_url is not None
    assert FAKE_PASSWORD in planted.bus_url.get_secret_value()  # still usable by clients
    assert planted.alpaca_api_key is not None
    assert planted.alpaca_api_key.get_secret_value() == FAKE_KEY


@pytest.mark.parametrize("formatter_cls", [JsonFormatter, TextFormatter])
def test_no_log_line_carries_a_secret(planted, formatter_cls) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_cls("test-service"))
    logger = logging.getLogger("tradeos_lab.test_secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("connecting with key %s", planted.alpaca_api_key.get_secret_value())
        logger.warning("url %s", planted.bus_url.get_secret_value(), extra={"secret": FAKE_SECRET})
        try:
            raise RuntimeError(f"auth failed for {FAKE_KEY}")
        except RuntimeError:
            logger.exception("broker refused")
        logger.info("settings %r", planted)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert output.count("\n") >= 4
    assert _leaks(output) == []


def test_json_log_lines_carry_service_time_severity_and_correlation() -> None:
    record = logging.LogRecord(
        "tradeos_lab.x", logging.WARNING, __file__, 1, "halt %s", ("AAPL",), None
    )
    with correlation("corr-123"):
        line = json.loads(JsonFormatter("signal-engine").format(record))
    assert line["service"] == "signal-engine"
    assert line["severity"] == "WARNING"
    assert line["correlation_id"] == "corr-123"
    assert line["message"] == "halt AAPL"
    assert line["ts"].endswith("+00:00")


def test_redact_url_hides_password_and_secret_query_values() -> None:
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://:pw@h/0") == "redis://:***@h/0"
    assert "tok" not in redact_url("http://h:8123/?password=tok&database=x")
    assert repr(SecretUrl("postgresql://a:b@c/d")) == "SecretUrl('postgresql://a:***@c/d')"


# Secrets that JSON, repr and URLs each spell differently: quotes, backslashes, non-ASCII, and
# every character a URL reserves.
NASTY_PASSWORD = 'q"uo\\te ünï€ 💥 :@/?#&%+=x'
NASTY_KEY = "sk\"\\'ß✓-broker\tsecret"


@pytest.fixture
def nasty(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from urllib.parse import quote

    monkeypatch.setenv("TRADEOS_ALPACA_SECRET_KEY", NASTY_KEY)
    monkeypatch.setenv(
        "TRADEOS_BUS_URL", f"redis://default:{quote(NASTY_PASSWORD, safe='')}@10.0.0.5:6379/0"
    )
    return load_settings()


def _nasty_leaks(text: str) -> list[str]:
    from tradeos_lab.secrets import secret_forms

    forms = secret_forms(NASTY_PASSWORD) | secret_forms(NASTY_KEY)
    return sorted(f for f in forms if f in text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_secrets_with_quotes_backslashes_and_unicode_leave_no_form_in_json_logs(nasty) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-service"))
    logger = logging.getLogger("tradeos_lab.test_nasty_secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("password %s key %r", NASTY_PASSWORD, NASTY_KEY)
        logger.info("url %s", nasty.bus_url.get_secret_value())
        logger.info("payload %s", json.dumps({"key": NASTY_KEY, "pw": NASTY_PASSWORD}))
        logger.info("extra fields", extra={"auth": {"pw": [NASTY_PASSWORD]}, "key": (NASTY_KEY, 1)})
        try:
            raise RuntimeError(f"auth failed for {NASTY_KEY!r} / {NASTY_PASSWORD}")
        except RuntimeError:
            logger.exception("broker refused")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 5
    assert _nasty_leaks(output) == []
    decoded = "\n".join(s for line in lines for s in _strings(line))
    assert _nasty_leaks(decoded) == []
    assert lines[3]["auth"] == {"pw": ["***"]}


def test_repr_of_settings_with_nasty_secrets_shows_none_of_them(nasty) -> None:  # type: ignore[no-untyped-def]
    for text in (repr(nasty), str(nasty), nasty.model_dump_json(), str(nasty.model_dump())):
        assert _nasty_leaks(text) == [], text


def test_runtime_file_keeps_no_records_password(settings_factory, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import quote

    from tradeos_lab.stack.embedded import EmbeddedStack
    from tradeos_lab.stack.runtime import RUNTIME_FILE

    # PostgreSQL here trusts loopback, so the password is carried but never checked.
    with_password = pg_url.replace("postgres@", f"postgres:{quote(NASTY_PASSWORD, safe='')}@")
    settings = settings_factory(records_url=with_password, lake_url="http://127.0.0.1:9/")
    stack = EmbeddedStack(settings)
    info = stack.start()
    try:
        text = (settings.data_dir.resolve() / RUNTIME_FILE).read_text()
    finally:
        stack.stop()
    assert _nasty_leaks(text) == []
    assert info.records_url == pg_url


def test_status_json_shows_no_form_of_a_nasty_url_password(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path
    from urllib.parse import quote

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    env["TRADEOS_DATA_DIR"] = str(tmp_path / "lab")
    for role in ("bus", "cache", "flags"):
        # nothing listens on port 9: the row carries the connection error
        env[f"TRADEOS_{role.upper()}_URL"] = (
            f"redis://u:{quote(NASTY_PASSWORD, safe='')}@127.0.0.1:9/0?password="
            f"{quote(NASTY_KEY, safe='')}"
        )
    out = subprocess.run(
        [str(Path(sys.executable).with_name("tradeos-lab")), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    assert {p["part"]: p["state"] for p in report["parts"]}["bus"] == "down"
    assert _nasty_leaks(out.stdout + out.stderr) == []


def test_urls_without_a_password_keep_every_other_character() -> None:
    from tradeos_lab.secrets import url_without_password

    sqlite = "sqlite:////srv/lab/.tradeos/records.db"
    assert url_without_password(sqlite) == sqlite
    assert redact_url(sqlite) == sqlite
    assert url_without_password("unix://:pw@/tmp/bus.sock?db=0") == "unix:///tmp/bus.sock?db=0"
    assert (
        url_without_password("postgresql+psycopg://app:pw@db:5432/rec?sslmode=require&password=x")
        == "postgresql+psycopg://app@db:5432/rec?sslmode=require"
    )
