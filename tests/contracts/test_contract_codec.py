"""The codec and the models on bad input: every failure is a ContractError naming the problem."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest

from tradeos_lab.contracts import (
    FIELD,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    STREAM_SCHEMAS,
    Audit,
    Bar,
    BarMessage,
    FillV1Message,
    Intent,
    Order,
    OrderMessage,
    OrderV1Message,
    PositionUpdate,
    Quote,
    RawSignal,
    RiskEvent,
    decode,
    decode_entry,
    derive,
    encode,
    encode_entry,
    is_message_id,
    message_id_time,
    new_message,
    new_message_id,
    schema_for,
    stream_for,
)
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.keys import Stream

SAMPLES = Path(__file__).resolve().parents[2] / "data_contracts" / "samples"

# Fixed ids: parametrize values must be the same in every xdist worker.
V4_ID = "3f2b8c1e-6a4d-4f0e-9b7a-2c5d8e1f0a3b"
UPPER_V7_ID = "0190A1B2-C3D4-7E5F-8A6B-1C2D3E4F5A6B"


def sample(name: str, index: int = 0, major: int | None = None) -> dict[str, Any]:
    """A golden sample of the newest major (or of `major`) as a mutable dict."""
    major = schema_for(name).major() if major is None else major
    path = SAMPLES / f"{name}.v{major}.json"
    docs: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))
    return docs[index]


def raw_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def a_bar(**changes: Any) -> Bar:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "timeframe": "5m",
        "ts": datetime(2024, 3, 15, 14, 30, tzinfo=UTC),
        "open": 172.5,
        "high": 173.1,
        "low": 172.3,
        "close": 172.95,
        "volume": 1250430.0,
        "source": "alpaca",
    }
    return Bar(**(fields | changes))


# ---- size, encoding, syntax --------------------------------------------------------------------


def test_a_one_megabyte_field_is_rejected_by_size_before_parsing() -> None:
    document = sample("risk_event")
    document["payload"]["detail"] = "x" * 1_000_000
    with pytest.raises(ContractError, match=r"bytes; the limit is 262144"):
        decode(raw_of(document))


def test_a_field_over_its_length_bound_is_rejected_under_the_size_limit() -> None:
    document = sample("risk_event")
    document["payload"]["detail"] = "x" * 5000
    with pytest.raises(ContractError, match=r"payload\.detail: String should have at most 4000"):
        decode(raw_of(document))


def test_the_error_for_a_huge_value_stays_short() -> None:
    document = sample("market_data.bar")
    document["payload"]["symbol"] = "A" * 200_000
    with pytest.raises(ContractError) as caught:
        decode(raw_of(document))
    assert "payload.symbol" in str(caught.value)
    assert len(str(caught.value)) < 400


def test_encode_refuses_a_message_over_the_limit() -> None:
    big = {"rows": ["y" * 1000] * 300}
    message = new_message(
        Audit(
            actor="user:alice",
            action="config.set",
            target="config:big",
            old_value=None,
            new_value=big,
            reason="load test",
        ),
        producer="notebook",
    )
    with pytest.raises(ContractError, match="nothing was published"):
        encode(message)
    assert len(json.dumps(big)) > MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw.replace(b'"alpaca"', b'"alp\xffca"'),
        lambda raw: raw.replace(b'"alpaca"', b'"alp\xc3\x28ca"'),  # broken two-byte sequence
        lambda raw: b"\xfe\xff" + raw,
    ],
    ids=["stray-0xff", "bad-continuation", "utf16-bom"],
)
def test_non_utf8_bytes_are_rejected(mutate: Any) -> None:
    raw = mutate(raw_of(sample("market_data.bar")))
    with pytest.raises(ContractError, match="not valid UTF-8"):
        decode(raw)


def test_a_str_with_a_lone_surrogate_is_rejected() -> None:
    text = raw_of(sample("market_data.bar")).decode().replace("alpaca", "alp\ud800ca")
    with pytest.raises(ContractError, match="not valid UTF-8"):
        decode(text)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'"market_data.bar"', "JSON str, not an object"),
        (b"{}", "no string field 'schema'"),
        (b'{"schema": 7, "version": "1.0.0"}', "no string field 'schema'"),
        (b'{"schema": "fill"}', "no string field 'version'"),
        (b'{"version": "1.0", "schema": "fill"}', "expected MAJOR.MINOR.PATCH"),
        (b'{"version": "1.0.0", "schema": "fills"}', "unknown schema 'fills'"),
        (b'{"schema": "fill", "version": "1.0.0", "payload": ', "Invalid JSON"),
        (b"[" * 10_000, "not valid JSON"),
    ],
)
def test_malformed_messages_are_rejected_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(raw)


@pytest.mark.parametrize("raw", [None, 42, ["m"], {"m": b"x"}])
def test_decode_of_something_that_is_not_bytes_or_text_is_a_contract_error(raw: Any) -> None:
    with pytest.raises(ContractError, match="bytes or str"):
        decode(raw)


# ---- schema, version, stream -------------------------------------------------------------------


def test_an_unknown_schema_is_rejected() -> None:
    document = sample("fill") | {"schema": "fill.partial"}
    with pytest.raises(ContractError, match=re.escape("unknown schema 'fill.partial'")):
        decode(raw_of(document))


def test_an_unsupported_major_version_is_rejected() -> None:
    document = sample("fill") | {"version": "3.0.0"}
    with pytest.raises(ContractError, match="unsupported major version 3 of fill"):
        decode(raw_of(document))


def test_a_newer_minor_is_rejected_so_an_old_reader_never_guesses() -> None:
    document = sample("fill") | {"version": "2.1.0"}
    with pytest.raises(ContractError, match=re.escape("newer than this reader's 2.0.0")):
        decode(raw_of(document))


def test_a_newer_patch_is_accepted() -> None:
    document = sample("fill") | {"version": "2.0.7"}
    assert decode(raw_of(document)).version == "2.0.7"


def test_a_schema_on_the_wrong_stream_is_rejected() -> None:
    raw = raw_of(sample("fill"))
    assert decode(raw, stream=Stream.FILLS_RAW).schema_name == "fill"
    with pytest.raises(ContractError, match=re.escape("belongs on stream fills.raw, not orders")):
        decode(raw, stream=Stream.ORDERS)


def test_a_second_schema_key_cannot_smuggle_in_another_type() -> None:
    text = raw_of(sample("fill")).decode()
    with pytest.raises(ContractError, match="schema 'order' sent to the fill model"):
        decode(text[:-1] + ', "schema": "order"}')


def test_key_order_does_not_matter() -> None:
    document = sample("intent")
    reordered = {k: document[k] for k in reversed(list(document))}
    assert decode(json.dumps(reordered)) == decode(raw_of(document))


# ---- field validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "path", "value", "field"),
    [
        ("intent", ("payload", "side"), "hold", r"payload\.side: Input should be 'buy' or 'sell'"),
        ("order", ("payload", "status"), "pending", r"payload\.status: Input should be"),
        ("risk_event", ("payload", "kind"), "meteor", r"payload\.kind: Input should be"),
        ("risk_event", ("payload", "severity"), "CRITICAL", r"payload\.severity"),
        ("fill", ("payload", "liquidity"), "makers", r"payload\.liquidity"),
        ("market_data.bar", ("payload", "timeframe"), "2m", r"payload\.timeframe"),
        ("signal.raw", ("payload", "direction"), "up", r"payload\.direction"),
    ],
)
def test_unknown_enum_values_are_rejected(
    schema: str, path: tuple[str, str], value: str, field: str
) -> None:
    document = sample(schema)
    document[path[0]][path[1]] = value
    with pytest.raises(ContractError, match=field):
        decode(raw_of(document))


@pytest.mark.parametrize(
    ("schema", "field", "value"),
    [
        ("fill", "price", "172.97"),  # a number as a string
        ("fill", "quantity", True),  # a bool is not a number
        ("fill", "quantity", [10]),
        ("fill", "symbol", 1234),
        ("fill", "fee", None),
        ("fill", "ts", 1710513300),  # epoch seconds are not a time
        ("fill", "ts", "2024-03-15T14:35:00"),  # no offset: ambiguous
        ("fill", "ts", "1969-12-31T23:59:59Z"),
        ("fill", "price", -172.97),
        ("fill", "price", 0),
        ("fill", "quantity", 1e400),  # overflows to infinity
        ("signal.raw", "strength", 1.5),
        ("signal.raw", "features", {"rsi": "high"}),
        ("signal.raw", "features", {f"f{i}": 1.0 for i in range(65)}),
        ("signal.raw", "features", {"bad key": 1.0}),
        ("signal.raw", "source_message_id", V4_ID),  # not a UUIDv7
        ("market_data.bar", "trade_count", 12.5),
        ("risk_event", "data", {"nested": {"a": 1}}),
        ("audit", "reason", ""),
        ("audit", "reason", "line\x1b[2Jcleared"),  # terminal escape in free text
    ],
)
def test_wrong_types_and_values_are_rejected_naming_the_field(
    schema: str, field: str, value: Any
) -> None:
    document = sample(schema)
    document["payload"][field] = value
    with pytest.raises(ContractError, match=rf"payload\.{field}"):
        decode(raw_of(document))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", "not-an-id"),
        ("message_id", V4_ID),
        ("message_id", UPPER_V7_ID),
        ("causation_id", ""),
        ("correlation_id", "has space"),
        ("producer", ""),
        ("producer", "x" * 65),
        ("produced_at", "yesterday"),
    ],
)
def test_bad_envelope_fields_are_rejected(field: str, value: Any) -> None:
    document = sample("position") | {field: value}
    with pytest.raises(ContractError, match=field):
        decode(raw_of(document))


def test_nan_and_infinity_literals_are_rejected() -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        raw = raw_of(sample("fill")).replace(b'"fee": 0.0', b'"fee": ' + literal)
        assert literal in raw
        with pytest.raises(ContractError, match=r"payload\.fee"):
            decode(raw)


def test_unknown_fields_are_rejected_in_envelope_and_payload() -> None:
    document = sample("intent")
    with pytest.raises(ContractError, match="extra_field"):
        decode(raw_of(document | {"extra_field": 1}))
    document["payload"]["leverage"] = 10
    with pytest.raises(ContractError, match=r"payload\.leverage: Extra inputs"):
        decode(raw_of(document))


INVALID_TICKERS = [
    "AAPL'; DROP TABLE x;--",
    "AAPL;DROP",
    "\u0410APL",  # Cyrillic capital A
    "\uff21\uff21\uff30\uff2c",  # fullwidth AAPL
    "AAPL\u200b",  # zero-width space
    "aapl",
    "",
    "A" * 21,
    "AA PL",
    "AAPL\n",
    "-AAPL",
]


@pytest.mark.parametrize("ticker", INVALID_TICKERS)
@pytest.mark.parametrize("schema", ["market_data.bar", "intent", "fill", "position"])
def test_an_invalid_ticker_is_rejected_on_decode(schema: str, ticker: str) -> None:
    document = sample(schema)
    document["payload"]["symbol"] = ticker
    with pytest.raises(ContractError, match=r"payload\.symbol"):
        decode(raw_of(document))


@pytest.mark.parametrize("ticker", INVALID_TICKERS)
def test_an_invalid_ticker_is_rejected_when_building_a_payload(ticker: str) -> None:
    with pytest.raises(ContractError, match="symbol"):
        a_bar(symbol=ticker)


# ---- cross-field rules -------------------------------------------------------------------------


def test_bar_prices_must_be_consistent() -> None:
    with pytest.raises(ContractError, match=re.escape("high 1.0 is below low 2.0")):
        a_bar(open=1.5, high=1.0, low=2.0, close=1.5)
    with pytest.raises(ContractError, match=re.escape("close 180.0 is outside")):
        a_bar(close=180.0)


def test_bar_time_must_be_on_its_timeframe_grid() -> None:
    with pytest.raises(ContractError, match="not on the 5m grid"):
        a_bar(ts=datetime(2024, 3, 15, 14, 31, tzinfo=UTC))
    assert a_bar(timeframe="1m", ts=datetime(2024, 3, 15, 14, 31, tzinfo=UTC)).ts.minute == 31


def test_a_crossed_quote_is_rejected() -> None:
    with pytest.raises(ContractError, match=re.escape("bid 10.5 is above ask 10.4")):
        Quote(
            symbol="AAPL",
            ts=datetime(2024, 3, 15, tzinfo=UTC),
            bid_price=10.5,
            bid_size=1,
            ask_price=10.4,
            ask_size=1,
            source="alpaca",
        )


def test_signal_direction_must_match_the_sign_of_strength() -> None:
    fields: dict[str, Any] = {
        "strategy": "momo",
        "symbol": "AAPL",
        "timeframe": "1m",
        "ts": datetime(2024, 3, 15, tzinfo=UTC),
        "confidence": 0.5,
        "features": {},
        "source_message_id": new_message_id(),
    }
    assert RawSignal(direction="long", strength=0.3, **fields).direction == "long"
    assert RawSignal(direction="flat", strength=0.0, **fields).direction == "flat"
    with pytest.raises(
        ContractError, match=re.escape("direction short disagrees with strength 0.3")
    ):
        RawSignal(direction="short", strength=0.3, **fields)


INTENT: dict[str, Any] = {
    "symbol": "AAPL",
    "side": "buy",
    "quantity": 10.0,
    "time_in_force": "day",
    "strategy": "momo",
    "reduce_only": False,
    "checks_passed": ["kill_switch"],
}


@pytest.mark.parametrize(
    ("prices", "error"),
    [
        ({"order_type": "limit"}, "a limit order needs limit_price"),
        ({"order_type": "stop"}, "a stop order needs stop_price"),
        ({"order_type": "stop_limit", "limit_price": 10.0}, "needs stop_price"),
        ({"order_type": "market", "limit_price": 10.0}, "must not have limit_price"),
        ({"order_type": "limit", "limit_price": 10.0, "stop_price": 9.0}, "must not have stop"),
    ],
)
def test_order_type_price_rules(prices: dict[str, Any], error: str) -> None:
    with pytest.raises(ContractError, match=error):
        Intent(**INTENT, **prices)


def test_order_type_price_rules_accept_the_right_prices() -> None:
    limit = Intent(**INTENT, order_type="stop_limit", limit_price=10.0, stop_price=10.2)
    assert (limit.limit_price, limit.stop_price) == (10.0, 10.2)
    assert Intent(**INTENT, order_type="market").limit_price is None


def test_checks_passed_has_no_duplicates() -> None:
    with pytest.raises(ContractError, match="lists a check twice"):
        Intent(**INTENT | {"checks_passed": ["a", "a"]}, order_type="market")


ORDER: dict[str, Any] = {
    "client_order_id": "momo-1",
    "intent_id": new_message_id(),
    "strategy": "momo",
    "symbol": "AAPL",
    "side": "buy",
    "quantity": 10.0,
    "order_type": "market",
    "time_in_force": "day",
    "ts": datetime(2024, 3, 15, tzinfo=UTC),
}


def test_client_order_id_is_at_most_the_brokers_48_characters_in_orders_and_fills() -> None:
    longest = "c" * CLIENT_ORDER_ID_MAX_LENGTH
    state = {"status": "new", "filled_quantity": 0.0}
    assert Order(**ORDER | {"client_order_id": longest}, **state).client_order_id == longest
    with pytest.raises(ContractError, match="client_order_id"):
        Order(**ORDER | {"client_order_id": longest + "c"}, **state)
    fill = sample("fill")
    fill["payload"]["client_order_id"] = longest + "c"
    with pytest.raises(ContractError, match="client_order_id"):
        decode(raw_of(fill))
    for name in ("order", "fill"):
        schema = json.loads((SAMPLES.parent / "schemas" / f"{name}.v2.json").read_text("utf-8"))
        pattern = schema["$defs"][name.capitalize()]["properties"]["client_order_id"]["pattern"]
        assert pattern.endswith(f"{{0,{CLIENT_ORDER_ID_MAX_LENGTH - 1}}}$")


def test_order_and_fill_of_major_1_are_still_read_and_major_2_is_written() -> None:
    old_order = decode(raw_of(sample("order", index=1, major=1)))
    assert isinstance(old_order, OrderV1Message)
    assert old_order.payload.avg_fill_price == 172.97
    old_fill = decode(raw_of(sample("fill", major=1)))
    assert isinstance(old_fill, FillV1Message)
    order = Order(**ORDER, status="filled", filled_quantity=10.0, avg_price=172.97)
    written = new_message(order, producer="execution")
    assert (written.version, written.payload.avg_price) == ("2.0.0", 172.97)
    assert isinstance(decode(encode(written)), OrderMessage)


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"status": "filled", "filled_quantity": 4.0, "avg_price": 1.0}, "a filled order"),
        ({"status": "partially_filled", "filled_quantity": 0.0}, "partially filled"),
        ({"status": "partially_filled", "filled_quantity": 10.0, "avg_price": 1.0}, "part"),
        ({"status": "accepted", "filled_quantity": 1.0, "avg_price": 1.0}, "accepted order"),
        ({"status": "canceled", "filled_quantity": 11.0, "avg_price": 1.0}, "exceeds"),
        ({"status": "canceled", "filled_quantity": 2.0}, "avg_price must be set"),
        ({"status": "new", "filled_quantity": 0.0, "avg_price": 1.0}, "avg_price"),
        ({"status": "rejected", "filled_quantity": 0.0}, "a rejected order needs a reason"),
    ],
)
def test_order_status_and_fill_quantities_must_agree(state: dict[str, Any], error: str) -> None:
    with pytest.raises(ContractError, match=error):
        Order(**ORDER, **state)


def test_an_open_position_needs_an_average_price() -> None:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "market_value": 0.0,
        "unrealized_pnl": 0.0,
        "realized_pnl": 0.0,
        "ts": datetime(2024, 3, 15, tzinfo=UTC),
    }
    assert PositionUpdate(quantity=0.0, avg_price=0.0, **fields).quantity == 0
    with pytest.raises(ContractError, match="avg_price > 0"):
        PositionUpdate(quantity=-3.0, avg_price=0.0, **fields)


def test_audit_values_must_be_finite_and_shallow() -> None:
    base: dict[str, Any] = {"actor": "user:a", "action": "x", "target": "y", "reason": "z"}
    with pytest.raises(ContractError, match=r"new_value\.\S*: Input should be a finite number"):
        Audit(**base, old_value=None, new_value={"a": [float("nan")]})
    deep: Any = 1
    for _ in range(12):
        deep = [deep]
    with pytest.raises(ContractError, match="nested deeper"):
        Audit(**base, old_value=deep, new_value=None)


def test_model_errors_are_the_workbench_validation_error() -> None:
    with pytest.raises(ValidationError):
        a_bar(volume=-1.0)


def test_naive_times_are_rejected_and_offsets_become_utc() -> None:
    with pytest.raises(ContractError, match="ts"):
        a_bar(ts=datetime(2024, 3, 15, 14, 30))
    local = datetime(2024, 3, 15, 16, 30, tzinfo=timezone(timedelta(hours=2)))
    bar = a_bar(ts=local)
    assert bar.ts.utcoffset() == timedelta(0)
    assert bar.ts == local
    assert b'"ts":"2024-03-15T14:30:00Z"' in encode(new_message(bar, producer="ingestion"))


# ---- envelope helpers and immutability ---------------------------------------------------------


def test_new_message_starts_a_chain_and_derive_continues_it() -> None:
    bar = new_message(a_bar(), producer="ingestion")
    assert bar.correlation_id == bar.message_id
    assert bar.causation_id is None
    assert isinstance(bar, BarMessage)
    assert (bar.schema_name, bar.version) == ("market_data.bar", BarMessage.VERSION)
    event = RiskEvent(
        kind="data_gap",
        severity="warning",
        scope="symbol:AAPL",
        detail="3 bars missing",
        data={"missing": 3},
        ts=datetime(2024, 3, 15, tzinfo=UTC),
    )
    child = derive(bar, event, producer="ingestion")
    grandchild = derive(child, event, producer="feasibility")
    assert child.correlation_id == grandchild.correlation_id == bar.message_id
    assert child.causation_id == bar.message_id
    assert grandchild.causation_id == child.message_id
    assert bar.message_id < child.message_id < grandchild.message_id
    joined = new_message(event, producer="notebook", correlation_id="run-42")
    assert joined.correlation_id == "run-42"


def test_messages_are_immutable() -> None:
    message = new_message(a_bar(), producer="ingestion")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        message.producer = "someone-else"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        message.payload.close = 1.0  # type: ignore[misc]


def test_new_message_rejects_a_bad_producer_name() -> None:
    with pytest.raises(ContractError, match="producer"):
        new_message(a_bar(), producer="has spaces")


def test_derive_checks_what_its_caller_gives() -> None:
    bar = new_message(a_bar(), producer="ingestion")
    event = RiskEvent(
        kind="data_gap",
        severity="warning",
        scope="symbol:AAPL",
        detail="gap",
        data={},
        ts=bar.payload.ts,
    )
    assert derive(bar, event, producer="Feasibility").producer == "feasibility"
    with pytest.raises(ContractError, match="producer"):
        derive(bar, event, producer="has spaces")
    with pytest.raises(ContractError, match="produced_at"):
        derive(bar, event, producer="feasibility", produced_at=datetime(2024, 3, 15))
    with pytest.raises(ContractError, match="produced_at"):
        derive(bar, event, producer="feasibility", produced_at=datetime(2200, 1, 1, tzinfo=UTC))
    with pytest.raises(ContractError, match="message_id"):
        derive(bar, event, producer="feasibility", message_id="not-an-id")
    with pytest.raises(ContractError, match="not a message payload"):
        derive(bar, bar, producer="feasibility")  # type: ignore[type-var]
    child = derive(bar, event, producer="feasibility")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        child.producer = "someone-else"  # type: ignore[misc]


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(ContractError, match="cannot encode a Bar"):
        encode(a_bar())  # type: ignore[arg-type]


def test_encoding_is_compact_utf8_json_with_schema_and_version_first() -> None:
    message = new_message(a_bar(), producer="ingestion")
    raw = encode(message)
    assert raw.startswith(b'{"schema":"market_data.bar","version":"1.0.0",')
    assert b": " not in raw
    assert b", " not in raw
    assert json.loads(raw.decode("utf-8"))["payload"]["symbol"] == "AAPL"


def test_decode_accepts_bytes_text_and_buffers() -> None:
    raw = encode(new_message(a_bar(), producer="ingestion"))
    expected = decode(raw)
    assert decode(raw.decode()) == expected
    assert decode(bytearray(raw)) == expected  # type: ignore[arg-type]
    assert decode(memoryview(raw)) == expected  # type: ignore[arg-type]


def test_stream_entries_hold_the_message_under_one_field() -> None:
    message = new_message(a_bar(), producer="ingestion")
    entry = encode_entry(message)
    assert list(entry) == [FIELD] == ["m"]
    assert decode_entry({FIELD.encode(): entry[FIELD]}, stream=Stream.MARKET_DATA) == message
    assert decode_entry(entry) == message
    with pytest.raises(ContractError, match="no 'm' field"):
        decode_entry({b"x": entry[FIELD]})


# ---- registry and ids --------------------------------------------------------------------------


def test_every_stream_carries_at_least_one_schema_and_every_schema_one_stream() -> None:
    assert all(STREAM_SCHEMAS[s] for s in Stream)
    names = [n for s in Stream for n in STREAM_SCHEMAS[s]]
    assert len(names) == len(set(names)) == len({c.SCHEMA for c in MESSAGE_TYPES})
    assert STREAM_SCHEMAS[Stream.MARKET_DATA] == {
        "market_data.bar",
        "market_data.quote",
        "market_data.trade",
    }
    for name in names:
        assert name in STREAM_SCHEMAS[stream_for(name)]


def test_schema_for_names_the_known_schemas_when_asked_for_an_unknown_one() -> None:
    assert schema_for("order").SCHEMA == "order"
    assert schema_for("order", 1).major() == 1
    with pytest.raises(ContractError, match=re.escape("known: market_data.bar")):
        schema_for("orders")
    with pytest.raises(ContractError, match="unsupported major version 9"):
        schema_for("order", 9)


def test_message_ids_are_uuid7_unique_and_increasing() -> None:
    ids = [new_message_id() for _ in range(20_000)]  # far more than one per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert all(is_message_id(i) for i in ids)
    made = message_id_time(ids[-1])
    assert abs(made - datetime.now(UTC)) < timedelta(seconds=5)
    assert not is_message_id(str(uuid.uuid4()))
    with pytest.raises(ContractError):
        message_id_time("nope")
