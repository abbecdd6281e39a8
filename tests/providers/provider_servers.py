"""A local HTTP server that answers like Coinbase Exchange and Alpaca market data.

It is the only double in the provider tests: it speaks each provider's documented wire format
(Coinbase candles `[time, low, high, open, close, volume]` newest first, 300 at most, errors as
`{"message": ...}`; Alpaca `{"bars": {symbol: [...]}, "next_page_token": ...}` with inclusive
`end`), serves bars from the synthetic provider, records every request and can be told to fail
the next requests to a path (status, headers, body, or a delay longer than the client's timeout).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pandas as pd

from tradeos_lab.providers import SyntheticProvider

SEED = 7
API_KEY = "PKTESTKEY0123456789AB"
SECRET_KEY = "s3cr3t-0123456789abcdefghijklmnopqrstuv"
COINBASE_GRANULARITIES = {60: "1m", 300: "5m", 900: "15m", 3600: "1h", 86400: "1d"}
ALPACA_TIMEFRAMES = {"1Min": "1m", "5Min": "5m", "15Min": "15m", "1Hour": "1h", "1Day": "1d"}
NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class Fault:
    """One scripted answer in place of the normal one."""

    status: int = 200
    json_body: Any = None
    raw_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def source() -> SyntheticProvider:
    """The bars both fake providers serve; tests compare against the same generator."""
    return SyntheticProvider(seed=SEED)


def parse_time(value: str) -> datetime:
    if value.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(value), UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def alpaca_stock_bars(symbol: str, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
    """What the fake Alpaca holds for a stock in [start, end]: weekday bars only."""
    bars = source().fetch_bars(symbol, timeframe, start, end + timedelta(seconds=1))
    return bars.loc[bars["ts"].dt.day_of_week < 5].reset_index(drop=True)


def alpaca_stamp(ts: pd.Timestamp, timeframe: str) -> str:
    """Alpaca stamps a daily bar at midnight New York of its session date."""
    if timeframe == "1d":
        midnight = datetime(ts.year, ts.month, ts.day, tzinfo=NEW_YORK)
        ts = pd.Timestamp(midnight.astimezone(UTC))
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


class ProviderServer:
    """Coinbase and Alpaca on 127.0.0.1, with scripted faults and a request log."""

    def __init__(self, alpaca_page_size: int = 1000) -> None:
        self.alpaca_page_size = alpaca_page_size
        self.coinbase_products = {"BTC-USD", "ETH-USD"}
        self.quiet_products = {"ZRX-USD"}  # known, but no trades: the exchange answers []
        self.stocks = {"AAPL", "MSFT"}
        self.seen: list[Seen] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def inject(self, path_prefix: str, *faults: Fault) -> None:
        """The next requests whose path starts with `path_prefix` get these answers, in order."""
        with self._lock:
            self._faults.setdefault(path_prefix, deque()).extend(faults)

    def count(self, path_prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.startswith(path_prefix))

    def requests_to(self, path_prefix: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for prefix, queue in self._faults.items():
                if path.startswith(prefix) and queue:
                    return queue.popleft()
        return None

    # ---- the two APIs --------------------------------------------------------------------

    def coinbase(self, product: str, query: dict[str, str]) -> tuple[int, Any]:  # noqa: PLR0911 (one return per documented error answer)
        if product not in self.coinbase_products | self.quiet_products:
            return 404, {"message": "NotFound"}
        try:
            step = int(query.get("granularity", "0"))
        except ValueError:
            step = 0
        if step not in COINBASE_GRANULARITIES:
            return 400, {"message": "Unsupported granularity"}
        if "start" in query and "end" in query:
            try:
                start, end = parse_time(query["start"]), parse_time(query["end"])
            except ValueError:
                return 400, {"message": "Invalid start or end"}
        else:  # documented: without both, the range ends now
            end = datetime.now(UTC)
            start = end - timedelta(seconds=step * 299)
        if start > end:
            return 400, {"message": "start must be before end"}
        if (end - start).total_seconds() / step + 1 > 300:
            return 400, {
                "message": "granularity too small for the requested time range. Count of "
                "aggregations requested exceeds 300"
            }
        if product in self.quiet_products:
            return 200, []
        bars = source().fetch_bars(
            product, COINBASE_GRANULARITIES[step], start, end + timedelta(seconds=1)
        )
        rows = [
            [int(b.ts.timestamp()), b.low, b.high, b.open, b.close, b.volume]
            for b in bars.itertuples()
        ]
        return 200, rows[::-1]

    def alpaca(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        crypto = path.startswith("/v1beta3/crypto/")
        if not crypto and (
            headers.get("apca-api-key-id") != API_KEY
            or headers.get("apca-api-secret-key") != SECRET_KEY
        ):
            return 401, {"code": 40110000, "message": "request is not authorized"}
        timeframe = ALPACA_TIMEFRAMES.get(query.get("timeframe", ""))
        if timeframe is None:
            return 400, {"code": 42210000, "message": "invalid timeframe"}
        try:
            start, end = parse_time(query["start"]), parse_time(query["end"])
        except (KeyError, ValueError):
            return 400, {"code": 42210000, "message": "invalid start or end"}
        symbols = [s for s in query.get("symbols", "").split(",") if s]
        if not symbols:
            return 400, {"code": 42210000, "message": "symbols is required"}
        flat: list[tuple[str, dict[str, Any]]] = []
        for symbol in sorted(symbols):
            if not crypto and symbol not in self.stocks:
                continue  # Alpaca answers unknown tickers with no bars
            if crypto:
                bars = source().fetch_bars(symbol, timeframe, start, end + timedelta(seconds=1))
            else:
                bars = alpaca_stock_bars(symbol, timeframe, start, end)
            for b in bars.itertuples():
                flat.append(
                    (
                        symbol,
                        {
                            "t": alpaca_stamp(b.ts, timeframe),
                            "o": b.open,
                            "h": b.high,
                            "l": b.low,
                            "c": b.close,
                            "v": b.volume,
                            "n": int(b.trade_count),
                            "vw": b.vwap,
                        },
                    )
                )
        offset = int(base64.b64decode(query["page_token"])) if query.get("page_token") else 0
        limit = min(int(query.get("limit", "1000")), 10_000, self.alpaca_page_size)
        page = flat[offset : offset + limit]
        token = (
            base64.b64encode(str(offset + limit).encode()).decode()
            if offset + limit < len(flat)
            else None
        )
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        return 200, {"bars": grouped, "next_page_token": token}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.seen.append(Seen(parts.path, query, headers))
                fault = server._next_fault(parts.path)
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    body = (
                        fault.raw_body
                        if fault.raw_body is not None
                        else json.dumps(fault.json_body).encode()
                    )
                    self._send(fault.status, body, fault.headers)
                    return
                if parts.path.startswith("/products/") and parts.path.endswith("/candles"):
                    product = parts.path.split("/")[2]
                    status, payload = server.coinbase(product, query)
                elif parts.path in ("/v2/stocks/bars", "/v1beta3/crypto/us/bars"):
                    status, payload = server.alpaca(parts.path, query, headers)
                else:
                    status, payload = 404, {"message": "NotFound"}
                self._send(status, json.dumps(payload).encode(), {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
