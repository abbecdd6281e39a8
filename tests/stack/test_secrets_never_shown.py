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
