"""A local server that answers like Alpaca's paper trading API, over HTTP and a websocket.

It is the only double in the Alpaca broker tests and speaks Alpaca's documented formats: the order
object with its numbers as strings, errors as `{"code", "message"}`, `DELETE /v2/orders` as a 207
list of `{id, status, body}`, crypto orders as BTC/USD and crypto positions as BTCUSD. Orders,
fills, cash and positions live in memory; a test fills orders itself (`fill`). The `trade_updates`
stream follows the documented handshake (authenticate -> authorization, listen -> listening) and
then pushes each order event as a binary frame, as the paper stream does.

Faults are scripted per method and path prefix: an answer in place of the normal one (a status,
headers such as Retry-After, a body), a delay past the client's timeout, a TCP reset, each either
before the request takes effect or after it (the order was accepted, the answer is lost).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

API_KEY = "PKTRADEKEY0123456789"
SECRET_KEY = "tr4d3-s3cr3t-0123456789abcdefghijklmnop"
STOCKS = {"AAPL", "MSFT"}
CRYPTO = {"BTC/USD", "ETH/USD"}
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel"}


@dataclass
class Fault:
    """One scripted answer in place of the normal one."""

    status: int = 500
    json_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    """Close the connection with a TCP reset instead of answering."""
    after_effect: bool = False
    """Handle the request first (the order is placed, canceled...), then fail its answer."""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def number(value: float) -> str:
    return f"{value:.10g}"


class AlpacaTradingServer:
    """Alpaca paper trading on 127.0.0.1: REST on `url`, the trade-updates stream on
    `stream_url`, scripted faults and a log of every request."""

    def __init__(self, cash: float = 100_000.0) -> None:
        self.cash = cash
        self.orders: dict[str, dict[str, Any]] = {}  # by order id, in submission order
        self.positions: dict[str, float] = {}  # Alpaca symbol -> signed quantity
        self.last_price: dict[str, float] = {}
        self.seen: list[Seen] = []
        self.refuse_streams = False
        self._faults: dict[tuple[str, str], deque[Fault]] = {}
        self._actions: dict[tuple[str, str], deque[Callable[[], None]]] = {}
        self._lock = threading.RLock()
        self._sockets: set[ServerConnection] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )
        self._ws: Server = serve(self._stream, "127.0.0.1", 0, compression=None)
        self._ws_thread = threading.Thread(target=self._ws.serve_forever, daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def stream_url(self) -> str:
        host, port = self._ws.socket.getsockname()[:2]
        return f"ws://{host}:{port}/stream"

    def start(self) -> None:
        self._http_thread.start()
        self._ws_thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.drop_streams()
        self._ws.shutdown()

    # ---- test controls ----------------------------------------------------------------------

    def inject(self, method: str, path_prefix: str, *faults: Fault) -> None:
        """The next `method` requests whose path starts with `path_prefix` get these faults."""
        with self._lock:
            self._faults.setdefault((method, path_prefix), deque()).extend(faults)

    def then(self, method: str, path_prefix: str, action: Callable[[], None]) -> None:
        """Run `action` (a fill, a position moved) as the next matching request arrives, before
        it is answered: something happening at the venue between two requests of a client."""
        with self._lock:
            self._actions.setdefault((method, path_prefix), deque()).append(action)

    def requests(self, method: str, path_prefix: str = "/") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def order_of(self, client_order_id: str) -> dict[str, Any]:
        with self._lock:
            return next(o for o in self.orders.values() if o["client_order_id"] == client_order_id)

    def fill(
        self, client_order_id: str, quantity: float, price: float, *, publish: bool = True
    ) -> dict[str, Any]:
        """Execute `quantity` of an open order at `price`, as the venue would (`publish`: and
        push its trade update)."""
        with self._lock:
            order = self.order_of(client_order_id)
            filled = float(order["filled_qty"])
            average = float(order["filled_avg_price"] or 0)
            total = filled + quantity
            if total > float(order["qty"]) + 1e-9 or order["status"] not in OPEN_STATUSES:
                raise AssertionError(f"cannot fill {quantity} of {client_order_id}")
            order["filled_qty"] = number(total)
            order["filled_avg_price"] = number((filled * average + quantity * price) / total)
            done = total >= float(order["qty"]) - 1e-9
            order["status"] = "filled" if done else "partially_filled"
            order["updated_at"] = now_text()
            if done:
                order["filled_at"] = order["updated_at"]
            sign = 1 if order["side"] == "buy" else -1
            self.cash -= sign * quantity * price
            symbol = order["symbol"]
            self.positions[symbol] = self.positions.get(symbol, 0.0) + sign * quantity
            self.last_price[symbol] = price
            event = {
                "event": "fill" if done else "partial_fill",
                "execution_id": str(uuid.uuid4()),
                "order": dict(order),
                "timestamp": order["updated_at"],
                "price": number(price),
                "qty": number(quantity),
                "position_qty": number(self.positions[symbol]),
            }
        if publish:
            self.publish(event)
        return order

    def publish(self, data: dict[str, Any]) -> None:
        """Push one trade update to every listening stream (lost when none listens)."""
        frame = json.dumps({"stream": "trade_updates", "data": data}).encode()
        with self._lock:
            listeners = list(self._sockets)
        for ws in listeners:
            with contextlib.suppress(ConnectionClosed):
                ws.send(frame)

    def drop_streams(self) -> None:
        """Close every stream connection, as a network drop would."""
        with self._lock:
            listeners = list(self._sockets)
            self._sockets.clear()
        for ws in listeners:
            ws.close()

    @property
    def listening(self) -> int:
        with self._lock:
            return len(self._sockets)

    # ---- the REST API -----------------------------------------------------------------------

    def route(  # noqa: PLR0911 (one return per documented answer)
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self._lock:
            if method == "POST" and path == "/v2/orders":
                return self._submit(body)
            if method == "GET" and path == "/v2/orders:by_client_order_id":
                cid = query.get("client_order_id", "")
                found = [o for o in self.orders.values() if o["client_order_id"] == cid]
                return (200, found[0]) if found else (404, _not_found())
            if method == "GET" and path == "/v2/orders":
                return 200, self._list(query)
            if method == "DELETE" and path == "/v2/orders":
                return 207, [
                    {"id": o["id"], "status": 200, "body": self._cancel(o)}
                    for o in list(self.orders.values())
                    if o["status"] in OPEN_STATUSES
                ]
            if path.startswith("/v2/orders/"):
                order = self.orders.get(path.removeprefix("/v2/orders/"))
                if order is None:
                    return 404, _not_found()
                if method == "GET":
                    return 200, order
                if method == "DELETE":
                    if order["status"] not in OPEN_STATUSES:
                        return 422, {"code": 42210000, "message": "order is not cancelable"}
                    self._cancel(order)
                    return 204, None
            if method == "GET" and path == "/v2/account":
                return 200, self._account()
            if method == "GET" and path == "/v2/positions":
                return 200, [self._position(s, q) for s, q in self.positions.items() if q]
        return 404, {"code": 40410000, "message": "endpoint not found"}

    def _submit(self, body: Any) -> tuple[int, Any]:
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if any(o["client_order_id"] == cid for o in self.orders.values()):
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        symbol = body.get("symbol")
        if symbol not in STOCKS | CRYPTO:
            return 422, {"code": 40010001, "message": f'asset "{symbol}" not found'}
        qty = float(body["qty"])
        price = float(body.get("limit_price") or self.last_price.get(symbol, 100.0))
        if body["side"] == "buy" and qty * price > self.cash:
            return 403, {"code": 40310000, "message": "insufficient buying power"}
        stamp = now_text()
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": cid,
            "created_at": stamp,
            "updated_at": stamp,
            "submitted_at": stamp,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol,
            "asset_class": "crypto" if symbol in CRYPTO else "us_equity",
            "notional": None,
            "qty": number(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "",
            "order_type": body["type"],
            "type": body["type"],
            "side": body["side"],
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
            "time_in_force": body["time_in_force"],
            "limit_price": None if body.get("limit_price") is None else number(price),
            "stop_price": None,
            "status": "accepted",
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }
        self.orders[order["id"]] = order
        self.publish({"event": "new", "order": dict(order), "timestamp": stamp})
        return 200, order

    def _cancel(self, order: dict[str, Any]) -> dict[str, Any]:
        order["status"] = "canceled"
        order["canceled_at"] = order["updated_at"] = now_text()
        self.publish({"event": "canceled", "order": dict(order), "timestamp": order["updated_at"]})
        return order

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Orders by status (open, closed, all) submitted strictly between `after` and `until`,
        newest first unless `direction=asc`, at most `limit`."""
        wanted = query.get("status", "open")
        after = _instant(query.get("after"))
        until = _instant(query.get("until"))
        chosen = [
            o
            for o in self.orders.values()
            if (wanted == "all" or (o["status"] in OPEN_STATUSES) == (wanted == "open"))
            and (after is None or _instant(o["submitted_at"]) > after)  # type: ignore[operator]
            and (until is None or _instant(o["submitted_at"]) < until)  # type: ignore[operator]
        ]
        if query.get("direction", "desc") == "desc":
            chosen.reverse()  # newest first, Alpaca's default direction
        return chosen[: int(query.get("limit", "50"))]

    def _account(self) -> dict[str, Any]:
        market = sum(q * self.last_price.get(s, 0.0) for s, q in self.positions.items())
        return {
            "id": "904837e3-3b76-47ec-b432-046db621571b",
            "account_number": "PA3TESTACCT",
            "status": "ACTIVE",
            "currency": "USD",
            "cash": number(self.cash),
            "portfolio_value": number(self.cash + market),
            "equity": number(self.cash + market),
            "last_equity": number(self.cash + market),
            "long_market_value": number(max(market, 0.0)),
            "short_market_value": number(min(market, 0.0)),
            "buying_power": number(self.cash * 2),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:04:05.123456Z",
        }

    def _position(self, symbol: str, quantity: float) -> dict[str, Any]:
        price = self.last_price.get(symbol, 0.0)
        crypto = symbol in CRYPTO
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol.replace("/", "") if crypto else symbol,
            "exchange": "CRYPTO" if crypto else "NASDAQ",
            "asset_class": "crypto" if crypto else "us_equity",
            "qty": number(quantity),
            "qty_available": number(quantity),
            "side": "long" if quantity > 0 else "short",
            "avg_entry_price": number(price),
            "market_value": number(quantity * price),
            "cost_basis": number(quantity * price),
            "unrealized_pl": "0",
            "current_price": number(price),
        }

    # ---- the stream -------------------------------------------------------------------------

    def _stream(self, ws: ServerConnection) -> None:
        if self.refuse_streams:
            return  # closed at once: the client sees the connection drop
        try:
            auth = json.loads(ws.recv(timeout=10))
            data = auth.get("data", {})
            if data.get("key_id") != API_KEY or data.get("secret_key") != SECRET_KEY:
                reply = {"status": "unauthorized", "action": "authenticate"}
                ws.send(json.dumps({"stream": "authorization", "data": reply}).encode())
                return
            reply = {"status": "authorized", "action": "authenticate"}
            ws.send(json.dumps({"stream": "authorization", "data": reply}).encode())
            listen = json.loads(ws.recv(timeout=10))
            streams = listen.get("data", {}).get("streams", [])
            with self._lock:
                ws.send(json.dumps({"stream": "listening", "data": {"streams": streams}}).encode())
                if "trade_updates" in streams:
                    self._sockets.add(ws)
            for _ in ws:  # held open until either side closes it
                pass
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            with self._lock:
                self._sockets.discard(ws)

    # ---- HTTP plumbing ----------------------------------------------------------------------

    def _next_action(self, method: str, path: str) -> None:
        with self._lock:
            for (m, prefix), actions in self._actions.items():
                if m == method and path.startswith(prefix) and actions:
                    actions.popleft()()
                    return

    def _next_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for (m, prefix), faults in self._faults.items():
                if m == method and path.startswith(prefix) and faults:
                    return faults.popleft()
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.seen.append(Seen(method, parts.path, query, body, headers))
                if (
                    headers.get("apca-api-key-id") != API_KEY
                    or headers.get("apca-api-secret-key") != SECRET_KEY
                ):
                    self._send(401, {"code": 40110000, "message": "request is not authorized"})
                    return
                server._next_action(method, parts.path)
                fault = server._next_fault(method, parts.path)
                if fault is not None and not fault.after_effect:
                    self._fail(fault)
                    return
                status, payload = server.route(method, parts.path, query, body)
                if fault is not None:
                    self._fail(fault)
                    return
                self._send(status, payload)

            def _fail(self, fault: Fault) -> None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.reset:
                    # SO_LINGER 0: close() sends a TCP reset, as a dropped connection does
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                self._send(fault.status, fault.json_body, fault.headers)

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                body = b"" if payload is None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def handle(self) -> None:
                with contextlib.suppress(OSError, ValueError):  # a reset closed the socket
                    super().handle()

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):  # a reset closed the socket
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _not_found() -> dict[str, Any]:
    return {"code": 40410000, "message": "order not found"}
