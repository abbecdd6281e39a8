"""Alpaca paper trading behind the broker protocol, through alpaca-py's `TradingClient`.

Every HTTP request passes the flags tier first: the account's rate limit (Alpaca documents 200
requests a minute per account, so the limit is shared by every process) and the broker's circuit
breaker, whose refusal is `CircuitOpen` (the caller turns it into a `risk_events` entry and holds
new intents; `AlpacaBroker.circuit()` tells the state). Symbols are converted at this edge only:
BTC-USD goes out as BTC/USD, and BTC/USD or a crypto position's BTCUSD comes back as BTC-USD.

Exactly once: Alpaca refuses a second order under a client_order_id it already holds (422), and a
repeat is answered with the order it holds. A submit whose outcome is unknown (a timeout, a 5xx, a
connection reset) is never sent again blindly: the order is looked up by its client_order_id and
sent again only when Alpaca answers 404; when the lookup fails too, the submit raises and the next
submit of that id looks up first. A 429 placed nothing and is sent again after its Retry-After.

Fills: an Alpaca order carries only its cumulative filled quantity and average price; the stream
reports executions, and REST polling (the stream's backstop) sees only the cumulative state. Both
are therefore read the same way: one fill per step of the cumulative quantity, with the execution
id `ALPACA_ORDER_ID:CUMULATIVE_QUANTITY` and the price that step adds to the notional. Whichever
source sees a step first, every report of it carries the same id (the records' dedup key), and
a restarted process seeded with what the records hold (`filled_so_far`) derives no fill twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from alpaca.trading.stream import TradingStream
from pydantic import SecretStr

from tradeos_lab.brokers.base import (
    BrokerAccount,
    BrokerFill,
    BrokerOrder,
    OrderReport,
    OrderRequest,
)
from tradeos_lab.contracts import Liquidity, OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.errors import (
    CircuitOpen,
    ConfigError,
    DependencyUnavailable,
    OrderNotFound,
    OrderRejected,
    ProviderError,
    ProviderRateLimited,
    RateLimited,
    TransientError,
    ValidationError,
)
from tradeos_lab.providers.alpaca import (
    alpaca_symbol,
    api_error,
    api_error_message,
    prepare_client,
    secret_or_none,
    symbol_from_alpaca,
)
from tradeos_lab.retry import RetryPolicy, retry_call
from tradeos_lab.secrets import register_secret
from tradeos_lab.settings import Settings
from tradeos_lab.symbols import canonical_name, canonical_symbol
from tradeos_lab.tiers.flags import (
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    Flags,
    RateLimiter,
)

log = logging.getLogger(__name__)

DEFAULT_TRADING_URL = "https://paper-api.alpaca.markets"
RATE_WINDOW_SECONDS = 60.0
ORDERS_PAGE = 500
"""Orders per GET /v2/orders page (Alpaca's largest)."""

FilledSoFar = Callable[[str], tuple[float, float]]
"""(quantity, notional) of the fills of an order the caller already holds, by client order id:
steps below it are not reported again after a restart."""

_ORDER_TYPES = (OrderType.MARKET, OrderType.LIMIT)
# Alpaca's order statuses; None: still working, whatever it has filled so far.
_STATUSES: dict[str, OrderStatus | None] = {
    "pending_new": OrderStatus.SUBMITTED,
    "new": OrderStatus.ACCEPTED,
    "accepted": OrderStatus.ACCEPTED,
    "accepted_for_bidding": OrderStatus.ACCEPTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "replaced": OrderStatus.CANCELED,  # lives on as the order that replaced it
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "pending_cancel": None,
    "pending_replace": None,
    "done_for_day": None,
    "stopped": None,
    "suspended": None,
    "calculated": None,
    "held": None,
}
_QTY_TOLERANCE = 1e-9


def default_stream_url(trading_url: str) -> str:
    """The trade-updates websocket beside a trading REST URL: `wss://HOST/stream`."""
    parts = urlsplit(trading_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/stream", "", ""))


@dataclass
class _Track:
    """What this process has seen of one Alpaca order: its fills as steps of the cumulative
    quantity (above what the caller already held) and its latest state, never going back."""

    filled: float
    notional: float
    order: BrokerOrder | None = None
    steps: list[BrokerFill] = field(default_factory=list)


class AlpacaBroker:
    """Alpaca's paper account: orders, account and positions over REST, trade updates over its
    websocket (`trade_updates()`), every request through the flags tier's limit and breaker."""

    def __init__(
        self,
        flags: Flags,
        *,
        api_key: SecretStr | str | None,
        secret_key: SecretStr | str | None,
        url: str = DEFAULT_TRADING_URL,
        stream_url: str | None = None,
        rate_limit_per_minute: int = 200,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        name: str = "alpaca",
        filled_so_far: FilledSoFar | None = None,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """`limiter` and `breaker` default to the flags tier's, named after the broker (the
        limit `rate_limit_per_minute` a minute); pass others to share them with a caller."""
        key, secret = secret_or_none(api_key), secret_or_none(secret_key)
        if key is None or secret is None:
            raise ConfigError(
                "Alpaca trading needs alpaca_api_key and alpaca_secret_key "
                "(TRADEOS_ALPACA_API_KEY, TRADEOS_ALPACA_SECRET_KEY)"
            )
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValidationError(f"timeout must be a number of seconds > 0, got {timeout}")
        register_secret(key.get_secret_value())
        register_secret(secret.get_secret_value())
        self.name = canonical_name(name, "broker name")
        self.url = url.rstrip("/")
        self.stream_url = stream_url or default_stream_url(self.url)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.filled_so_far = filled_so_far or _nothing_held
        self.limiter = limiter or flags.rate_limiter(
            self.name, limit=rate_limit_per_minute, window_seconds=RATE_WINDOW_SECONDS
        )
        self.breaker = breaker or flags.circuit_breaker(self.name)
        self._api_key = key
        self._secret_key = secret
        self._client = prepare_client(
            TradingClient(
                api_key=key.get_secret_value(),
                secret_key=secret.get_secret_value(),
                paper=True,
                raw_data=True,
                url_override=self.url,
            ),
            timeout=timeout,
            before_request=self._admit,
        )
        self._lock = threading.Lock()
        self._tracks: dict[str, _Track] = {}  # by Alpaca's order id
        self._unknown: set[str] = set()  # client order ids whose submit outcome is unknown

    @classmethod
    def from_settings(cls, settings: Settings, flags: Flags, **kwargs: Any) -> AlpacaBroker:
        return cls(
            flags,
            api_key=settings.alpaca_api_key,
            secret_key=settings.alpaca_secret_key,
            url=settings.alpaca_trading_url,
            stream_url=settings.alpaca_stream_url,
            rate_limit_per_minute=settings.alpaca_rate_limit_per_minute,
            timeout=settings.alpaca_timeout_seconds,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker(name={self.name!r}, url={self.url!r})"

    def close(self) -> None:
        """Close the HTTP connections (a trade-updates feed is stopped on its own)."""
        self._client._session.close()

    def __enter__(self) -> AlpacaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- orders -----------------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> OrderReport:
        """Place `request` once per client order id; a refused order comes back REJECTED (with
        Alpaca's reason), an order Alpaca already holds comes back as it stands."""
        cid = request.client_order_id
        problem = _unsupported(request)
        if problem is not None:
            return OrderReport(_rejected(request, problem))
        body = _alpaca_request(request)
        what = f"Alpaca submit {cid}"
        if cid in self._unknown:
            known = self._look_up_unknown(cid, what)
            if known is not None:
                return known
        for attempt in range(self.retry.attempts):
            outcome = self._submit_once(request, body, attempt, what)
            if isinstance(outcome, OrderReport):
                return outcome
            if attempt + 1 < self.retry.attempts:
                log.warning("%s: retry %d in %.2fs", what, attempt + 1, outcome)
                self.retry.sleep(outcome)
        raise DependencyUnavailable(
            f"{what}: not placed after {self.retry.attempts} attempts (Alpaca has no such order)"
        )

    def _submit_once(
        self,
        request: OrderRequest,
        body: MarketOrderRequest | LimitOrderRequest,
        attempt: int,
        what: str,
    ) -> OrderReport | float:
        """One POST of the order: its report, or the delay before it may be sent again (only
        when Alpaca surely did not place it: a 429, or a 404 for its client order id)."""
        cid = request.client_order_id
        try:
            raw = self._call(what, lambda: self._client.submit_order(body))
        except ProviderRateLimited as e:  # nothing was placed: sent again after the wait
            return self._rate_limited_delay(e, attempt, what)
        except OrderRejected as e:
            if _duplicate_client_order_id(e):
                held = self.get_order(cid)
                if held is None:
                    raise DependencyUnavailable(
                        f"{what}: Alpaca holds the id but cannot show the order yet"
                    ) from e
                return held
            reason = f"Alpaca refused the order ({e.status}): {e.reason}"
            return OrderReport(_rejected(request, reason))
        except CircuitOpen:
            raise
        except DependencyUnavailable:
            # A timeout, a 5xx or a reset: the order may stand at Alpaca. Look, never guess.
            self._unknown.add(cid)
            known = self._look_up_unknown(cid, what)
            if known is not None:
                return known
            return self.retry.backoff(attempt)  # Alpaca answered 404: safe to send again
        self._unknown.discard(cid)
        return self._report(raw)

    def get_order(self, client_order_id: str) -> OrderReport | None:
        """The order under `client_order_id` and the fills this process has derived for it
        (those the caller already held, per `filled_so_far`, are not repeated), or None."""
        what = f"Alpaca order {client_order_id}"
        try:
            raw = self._read(what, lambda: self._client.get_order_by_client_id(client_order_id))
        except OrderNotFound:
            return None
        order, _ = self._observe(raw)
        with self._lock:
            track = self._tracks[order.broker_order_id or ""]
            return OrderReport(order, tuple(track.steps))

    def cancel(self, client_order_id: str) -> BrokerOrder:
        """Ask Alpaca to cancel a working order; the order as it stands afterwards (Alpaca
        cancels asynchronously: it may still be working, pending its cancel)."""
        found = self.get_order(client_order_id)
        if found is None:
            raise OrderNotFound(f"Alpaca has no order {client_order_id} to cancel")
        if not found.order.is_open:
            return found.order
        order_id = found.order.broker_order_id
        what = f"Alpaca cancel {client_order_id}"
        with contextlib.suppress(OrderRejected):  # 422: no longer cancelable (filled meanwhile)
            self._read(what, lambda: self._client.cancel_order_by_id(order_id))
        after = self.get_order(client_order_id)
        return found.order if after is None else after.order

    def cancel_all(self) -> list[BrokerOrder]:
        """Cancel every working order of the account (Alpaca's DELETE /v2/orders)."""
        answers = self._read("Alpaca cancel all", self._client.cancel_orders) or []
        orders = []
        with _shape("Alpaca cancel-all answer"):
            for answer in answers:
                body = answer.get("body")
                if not isinstance(body, dict) or "client_order_id" not in body:
                    body = self._order_by_id(str(answer["id"]))
                orders.append(self._observe(body)[0])
        return orders

    def orders(self, *, since: datetime) -> list[OrderReport]:
        """Every working order and every order submitted after `since` (GET /v2/orders, a page
        of `ORDERS_PAGE` at a time, newest first), each with the fills this process has derived
        for it as `get_order` gives them: what reconciliation compares with the records."""
        raws: dict[str, Any] = {}
        with _shape("Alpaca orders"):
            for raw in self._open_orders():
                raws.setdefault(str(raw["id"]), raw)
            paged: set[str] = set()
            until: datetime | None = None
            while True:
                page = self._orders_page(since, until)
                ids = {str(r["id"]) for r in page}
                for raw in page:
                    raws.setdefault(str(raw["id"]), raw)
                if len(page) < ORDERS_PAGE or ids <= paged:
                    break  # the last page, or one only of orders listed before (one instant)
                paged |= ids
                # `until` is exclusive: orders sharing the oldest instant come again, deduplicated
                oldest = min(_ts(r.get("submitted_at") or r["created_at"]) for r in page)
                until = oldest + timedelta(microseconds=1)
        reports = []
        for raw in raws.values():
            order, _ = self._observe(raw)
            steps = self._track_steps(order.broker_order_id or "")
            reports.append(OrderReport(order, tuple(steps)))
        return reports

    def _orders_page(self, since: datetime, until: datetime | None) -> list[Any]:
        filters = GetOrdersRequest(
            status=QueryOrderStatus.ALL,
            limit=ORDERS_PAGE,
            after=since,
            until=until,
            direction=Sort.DESC,
        )
        return list(self._read("Alpaca orders", lambda: self._client.get_orders(filters)) or [])

    # ---- account ----------------------------------------------------------------------------

    def account(self) -> BrokerAccount:
        raw = self._read("Alpaca account", self._client.get_account)
        positions = self.positions()
        with _shape("Alpaca account"):
            return BrokerAccount(
                cash=float(raw["cash"]),
                equity=float(raw["equity"]),
                positions=positions,
                currency=str(raw.get("currency") or "USD"),
            )

    def positions(self) -> dict[str, float]:
        """Signed quantity per symbol (a short position is negative)."""
        raw = self._read("Alpaca positions", self._client.get_all_positions) or []
        out: dict[str, float] = {}
        with _shape("Alpaca positions"):
            for position in raw:
                symbol = symbol_from_alpaca(position["symbol"], position.get("asset_class"))
                quantity = abs(float(position["qty"]))
                if quantity > 0:
                    out[symbol] = -quantity if position.get("side") == "short" else quantity
        return out

    # ---- the breaker, for callers -----------------------------------------------------------

    def circuit(self) -> BreakerStatus:
        """The state of this broker's circuit breaker (OPEN: calls are refused until the
        cooldown ends; the caller records it as a `risk_events` entry and holds new intents)."""
        return self.breaker.status()

    def trade_updates(
        self, *, poll_interval_s: float = 5.0, stream: bool = True
    ) -> AlpacaTradeUpdates:
        """The account's order updates (websocket, REST polling while it is down); `start()` it."""
        return AlpacaTradeUpdates(self, poll_interval_s=poll_interval_s, stream=stream)

    # ---- internals: requests ----------------------------------------------------------------

    def _admit(self) -> None:
        """Before every HTTP request: the breaker must allow it, then one slot of the rate limit,
        waited for up to the retry policy's `max_retry_after`."""
        if not self.breaker.allow():
            raise CircuitOpen(
                f"the circuit of broker {self.name!r} is open after repeated failures; "
                "calls resume after its cooldown",
                self.breaker.dependency,
            )
        waited = 0.0
        while True:
            decision = self.limiter.acquire()
            if decision.allowed:
                return
            wait = max(decision.retry_after_seconds, 0.001)
            if waited + wait > self.retry.max_retry_after:
                raise RateLimited(
                    f"broker {self.name!r}: its rate limit ({self.limiter.limit} a minute) is "
                    f"exhausted for {decision.retry_after_seconds:.1f} s more"
                )
            self.retry.sleep(wait)
            waited += wait

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """One request; Alpaca's answers and failures become ours, and the breaker learns of
        them (an answer below 500 is a success, a 5xx, timeout or lost connection a failure)."""
        try:
            result = call()
        except APIError as e:
            status = e.status_code
            self._breaker_learns(failed=status is not None and status >= 500)
            raise _translate(e, what) from e
        except requests.exceptions.Timeout as e:
            self._breaker_learns(failed=True)
            raise DependencyUnavailable(
                f"{what}: Alpaca did not answer within {self.timeout:g} s"
            ) from e
        except requests.exceptions.ConnectionError as e:
            self._breaker_learns(failed=True)
            raise DependencyUnavailable(f"{what}: the connection to Alpaca failed") from e
        except requests.exceptions.RequestException as e:  # malformed JSON, a bad redirect
            self._breaker_learns(failed=False)
            raise ProviderError(f"{what}: Alpaca's answer is unusable: {e}") from e
        self._breaker_learns(failed=False)
        return result

    def _read(self, what: str, call: Callable[[], Any]) -> Any:
        """A request that changes nothing twice (a read, a cancel): transient failures are
        retried with backoff, a 429 after its Retry-After."""
        return retry_call(lambda: self._call(what, call), what=what, policy=self.retry)

    def _breaker_learns(self, *, failed: bool) -> None:
        try:
            if not failed:
                self.breaker.record_success()
                return
            status = self.breaker.record_failure()
        except TransientError:  # the flags tier is down: the call's own outcome matters more
            return
        if status.state is BreakerState.OPEN:
            log.warning("broker %s: circuit open after %d failures", self.name, status.failures)

    def _rate_limited_delay(self, error: ProviderRateLimited, attempt: int, what: str) -> float:
        if error.retry_after is None:
            return self.retry.backoff(attempt)
        if error.retry_after > self.retry.max_retry_after:
            raise RateLimited(
                f"{what}: Alpaca asked to wait {error.retry_after:.0f} s, longer than the "
                f"{self.retry.max_retry_after:.0f} s waited in-process; try again later"
            ) from error
        return error.retry_after

    def _look_up_unknown(self, client_order_id: str, what: str) -> OrderReport | None:
        """After a submit whose outcome is unknown: the order Alpaca holds, or None when it
        answers that it holds none. When the lookup fails too the outcome stays unknown: raise,
        and never send the order again until Alpaca has said it does not have it."""
        try:
            found = self.get_order(client_order_id)
        except TransientError as e:
            raise DependencyUnavailable(
                f"{what}: its outcome is unknown and the order cannot be looked up ({e}); it is "
                "not sent again before Alpaca answers whether it holds it"
            ) from e
        if found is not None:
            self._unknown.discard(client_order_id)
        return found

    # ---- internals: orders as this process has seen them -----------------------------------

    def _report(self, raw: Any, at: datetime | None = None) -> OrderReport:
        order, fills = self._observe(raw, at)
        return OrderReport(order, tuple(fills))

    def _observe(
        self, raw: Any, at: datetime | None = None
    ) -> tuple[BrokerOrder, list[BrokerFill]]:
        """Alpaca's order `raw` seen now: its state (never going back from a later one seen
        before) and the fills its cumulative quantity adds to what was seen or held before."""
        if not isinstance(raw, dict):
            raise ProviderError(f"Alpaca order is {type(raw).__name__}, not an object")
        with _shape("Alpaca order"):
            order = _broker_order(raw)
            cumulative = _decimal(raw.get("filled_qty") or "0")
            average = _float_or_none(raw.get("filled_avg_price"))
        order_id = order.broker_order_id or ""
        with self._lock:
            known = order_id in self._tracks
        # The caller's records are read outside the lock (an order is first seen once).
        held = None if known else _Track(*self.filled_so_far(order.client_order_id))
        with self._lock:
            track = self._tracks.setdefault(order_id, held or _Track(0.0, 0.0))
            new: list[BrokerFill] = []
            quantity = float(cumulative)
            if quantity > track.filled + _QTY_TOLERANCE:
                if average is None:
                    raise ProviderError(f"Alpaca order {order_id} filled with no average price")
                notional = quantity * average
                step = quantity - track.filled
                new.append(
                    BrokerFill(
                        execution_id=f"{order_id}:{_plain(cumulative)}",
                        client_order_id=order.client_order_id,
                        broker_order_id=order_id,
                        symbol=order.symbol,
                        side=order.side,
                        quantity=step,
                        price=(notional - track.notional) / step,
                        fee=0.0,  # Alpaca charges no commission on paper stock orders
                        fee_currency="USD",
                        liquidity=Liquidity.UNKNOWN,
                        ts=at or order.updated_at,
                    )
                )
                track.filled, track.notional = quantity, notional
                track.steps.extend(new)
            if track.order is not None and not _later(order, track.order):
                order = track.order
            track.order = order
            return order, new

    def _tracked_open(self) -> list[str]:
        """Alpaca ids of the orders this process last saw working."""
        with self._lock:
            return [i for i, t in self._tracks.items() if t.order is not None and t.order.is_open]

    def _tracked(self) -> list[tuple[str, BrokerOrder, list[BrokerFill]]]:
        """Every order this process has seen: its Alpaca id, latest state and fills."""
        with self._lock:
            return [(i, t.order, list(t.steps)) for i, t in self._tracks.items() if t.order]

    def _track_steps(self, order_id: str) -> list[BrokerFill]:
        with self._lock:
            track = self._tracks.get(order_id)
            return [] if track is None else list(track.steps)

    def _open_orders(self) -> list[Any]:
        filters = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        return list(self._read("Alpaca open orders", lambda: self._client.get_orders(filters)))

    def _order_by_id(self, order_id: str) -> Any:
        return self._read(
            f"Alpaca order {order_id}", lambda: self._client.get_order_by_id(order_id)
        )


class _TradeStream(TradingStream):
    """alpaca-py's trading stream, telling whether it is connected now."""

    def __init__(self, *args: Any, reconnect_min_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reconnect_min_backoff = reconnect_min_s
        self.connected = threading.Event()
        self.connections = 0  # how many times it has connected: a change means a gap

    def loop(self) -> Any:
        """The event loop the stream runs on, None until `run` has created it."""
        return self._loop

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]
        self.connections += 1
        self.connected.set()

    async def close(self) -> None:
        self.connected.clear()
        await super().close()


class AlpacaTradeUpdates:
    """The account's order updates: Alpaca's `trade_updates` websocket, and REST polling of the
    working orders while it is down and once after it comes back (what it missed meanwhile).

    Each change is reported once per process as an `OrderReport` (the order as it stands and the
    fills new since its last report); the same fill from the stream and from a poll carries one
    execution id, so a consumer that records fills by id never counts one twice.
    """

    def __init__(
        self,
        broker: AlpacaBroker,
        *,
        poll_interval_s: float = 5.0,
        stream: bool = True,
        reconnect_min_s: float = 1.0,
    ) -> None:
        if not math.isfinite(poll_interval_s) or poll_interval_s <= 0:
            raise ValidationError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self.broker = broker
        self.poll_interval_s = poll_interval_s
        self.polls = 0
        self._inbox: queue.Queue[Any] = queue.Queue()  # stream messages as received
        self._reported: dict[str, tuple[int, OrderStatus]] = {}
        self._last_poll = -math.inf
        self._catch_up = True  # nothing seen yet: the first read polls
        self._polled_after = 0  # the stream connection the last catch-up poll followed
        self._thread: threading.Thread | None = None
        self._stream: _TradeStream | None = None
        if stream:
            self._stream = _TradeStream(
                broker._api_key.get_secret_value(),
                broker._secret_key.get_secret_value(),
                paper=True,
                raw_data=True,
                url_override=broker.stream_url,
                reconnect_min_s=reconnect_min_s,
            )
            self._stream.subscribe_trade_updates(self._on_update)

    @property
    def connected(self) -> bool:
        return self._stream is not None and self._stream.connected.is_set()

    def start(self) -> AlpacaTradeUpdates:
        if self._stream is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._stream.run, name=f"{self.broker.name}-trade-updates", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        stream, thread = self._stream, self._thread
        if stream is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        loop: Any = stream.loop()
        while loop is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # its loop is being created: a stop sent before would be dropped
            loop = stream.loop()
        if loop is not None and loop.is_running():
            for ending in (stream.stop_ws, stream.close):
                with contextlib.suppress(RuntimeError, TimeoutError):
                    asyncio.run_coroutine_threadsafe(ending(), loop).result(timeout=timeout)
        thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def __enter__(self) -> AlpacaTradeUpdates:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reports(self, timeout: float = 0.0) -> list[OrderReport]:
        """What changed since the last call: the stream's updates (waiting up to `timeout` for
        the first), then, while the stream is down or just came back, a poll of the working
        orders (at most every `poll_interval_s`). A failed poll is tried again on a later call."""
        out: list[OrderReport] = []
        for message in self._drain(timeout):
            try:
                report = self._changed(*_update_of(message))
            except ProviderError as e:  # unreadable: the next poll reads the order's state
                log.warning("broker %s: a trade update was skipped: %s", self.broker.name, e)
                self._catch_up = True
                continue
            if report is not None:
                out.append(report)
        out.extend(self._seen_elsewhere())
        connected = self.connected
        connections = 0 if self._stream is None else self._stream.connections
        if not connected or connections != self._polled_after:
            self._catch_up = True  # down now, or reconnected since: updates may be missing
        due = time.monotonic() - self._last_poll >= self.poll_interval_s
        if self._catch_up and (connected or due):
            try:
                out.extend(self._poll())
            except (TransientError, ProviderError) as e:
                log.warning("broker %s: polling orders failed: %s", self.broker.name, e)
            else:
                self._catch_up = not connected
                self._polled_after = connections
        return out

    def _seen_elsewhere(self) -> list[OrderReport]:
        """Changes the broker saw through its other calls (a cancel's answer, a lookup, a
        listing), which the stream may have sent before it connected and a poll no longer
        lists as working: reported here too, once, as the stream would have."""
        out: list[OrderReport] = []
        for order_id, order, steps in self.broker._tracked():
            done, last_status = self._reported.get(order_id, (0, None))
            if len(steps) == done and order.status == last_status:
                continue
            self._reported[order_id] = (len(steps), order.status)
            out.append(OrderReport(order, tuple(steps[done:])))
        return out

    async def _on_update(self, message: Any) -> None:
        # Runs in the stream's thread, where an exception would drop the message unseen: it is
        # only queued here, and read (or found unreadable) by `reports`.
        self._inbox.put(message)

    def _drain(self, timeout: float) -> Iterator[Any]:
        try:
            yield self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    def _poll(self) -> list[OrderReport]:
        """The working orders, and each order last seen working that no longer is."""
        self._last_poll = time.monotonic()
        self.polls += 1
        was_open = self.broker._tracked_open()
        out: list[OrderReport] = []
        seen: set[str] = set()
        for raw in self.broker._open_orders():
            report = self._changed(raw, None)
            seen.add(str(raw.get("id")))
            if report is not None:
                out.append(report)
        for order_id in was_open:
            if order_id not in seen:
                report = self._changed(self.broker._order_by_id(order_id), None)
                if report is not None:
                    out.append(report)
        return out

    def _changed(self, raw: dict[str, Any], at: datetime | None) -> OrderReport | None:
        """The report of `raw` if it tells something not yet reported here, else None."""
        order, _ = self.broker._observe(raw, at)
        order_id = order.broker_order_id or ""
        steps = self.broker._track_steps(order_id)
        done, last_status = self._reported.get(order_id, (0, None))
        if len(steps) == done and order.status == last_status:
            return None
        self._reported[order_id] = (len(steps), order.status)
        return OrderReport(order, tuple(steps[done:]))


# ---- translation at the edge ----------------------------------------------------------------


def _update_of(message: Any) -> tuple[dict[str, Any], datetime | None]:
    """The order and time of a `trade_updates` message (`{"stream", "data": {"event", "order",
    "timestamp", ...}}`); `ProviderError` when it has no order."""
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("order"), dict):
        raise ProviderError("a trade update without an order object")
    try:
        at = _ts(data["timestamp"]) if data.get("timestamp") else None
    except ValueError as e:
        raise ProviderError(f"a trade update with an unreadable timestamp: {e}") from e
    return data["order"], at


def _unsupported(request: OrderRequest) -> str | None:
    """Why this broker refuses `request` without sending it, or None; malformed input raises."""
    if not math.isfinite(request.quantity) or request.quantity <= 0:
        raise ValidationError(f"order quantity must be a number > 0, got {request.quantity}")
    if OrderType(request.order_type) not in _ORDER_TYPES:
        return f"the Alpaca broker places market and limit orders, not {request.order_type}"
    if request.order_type is OrderType.LIMIT and (
        request.limit_price is None
        or not math.isfinite(request.limit_price)
        or request.limit_price <= 0
    ):
        raise ValidationError("a limit order needs a limit price > 0")
    return None


def _alpaca_request(request: OrderRequest) -> MarketOrderRequest | LimitOrderRequest:
    fields: dict[str, Any] = {
        "symbol": alpaca_symbol(canonical_symbol(request.symbol)),
        "qty": request.quantity,
        "side": Side(request.side).value,
        "time_in_force": TimeInForce(request.time_in_force).value,
        "client_order_id": request.client_order_id,
    }
    try:
        if request.order_type is OrderType.LIMIT:
            return LimitOrderRequest(**fields, limit_price=request.limit_price)
        return MarketOrderRequest(**fields)
    except ValueError as e:  # alpaca-py's own checks of the request
        raise ValidationError(f"order {request.client_order_id}: {e}") from e


def _rejected(request: OrderRequest, reason: str) -> BrokerOrder:
    return BrokerOrder(
        client_order_id=request.client_order_id,
        broker_order_id=None,
        symbol=canonical_symbol(request.symbol),
        side=Side(request.side),
        quantity=request.quantity,
        order_type=OrderType(request.order_type),
        limit_price=request.limit_price,
        time_in_force=TimeInForce(request.time_in_force),
        status=OrderStatus.REJECTED,
        filled_quantity=0.0,
        avg_price=None,
        reason=reason[:256],
        updated_at=datetime.now(UTC),
        strategy=request.strategy,
        intent_id=request.intent_id,
        stop_price=request.stop_price,
    )


def _broker_order(raw: dict[str, Any]) -> BrokerOrder:
    """Alpaca's order object (REST or stream) as a `BrokerOrder`; KeyError/ValueError when it
    lacks a field or holds a value our vocabulary has no word for (never guessed)."""
    quantity = float(raw["qty"])
    filled = float(raw.get("filled_qty") or 0)
    alpaca_status = str(raw["status"])
    if alpaca_status not in _STATUSES:
        raise ValueError(f"unknown order status {alpaca_status!r}")
    status = _STATUSES[alpaca_status]
    if status is None:
        if filled >= quantity - _QTY_TOLERANCE:
            status = OrderStatus.FILLED
        else:
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED
    return BrokerOrder(
        client_order_id=str(raw["client_order_id"]),
        broker_order_id=str(raw["id"]),
        symbol=symbol_from_alpaca(str(raw["symbol"]), raw.get("asset_class")),
        side=Side(raw["side"]),
        quantity=quantity,
        order_type=OrderType(raw.get("type") or raw["order_type"]),
        limit_price=_float_or_none(raw.get("limit_price")),
        time_in_force=TimeInForce(raw["time_in_force"]),
        status=status,
        filled_quantity=filled,
        avg_price=_float_or_none(raw.get("filled_avg_price")),
        reason=None,
        updated_at=_ts(raw.get("updated_at") or raw["created_at"]),
        stop_price=_float_or_none(raw.get("stop_price")),
    )


def _later(new: BrokerOrder, old: BrokerOrder) -> bool:
    """Whether `new` may replace `old`: a terminal state is final, and fills never go back."""
    if old.status.is_terminal:
        return False
    return new.filled_quantity >= old.filled_quantity - _QTY_TOLERANCE


def _translate(error: APIError, what: str) -> Exception:
    status = error.status_code
    if status == 404:
        return OrderNotFound(f"{what}: Alpaca holds no such order")
    if status is not None and 400 <= status < 500 and status not in (401, 429):
        message = api_error_message(error)
        return OrderRejected(
            f"{what}: Alpaca answered {status}: {message}", status=status, reason=message
        )
    if status == 401:
        return ProviderError(f"{what}: Alpaca refused the API keys (401)")
    return api_error(error, what)


def _duplicate_client_order_id(error: OrderRejected) -> bool:
    text = error.reason.lower()
    return error.status == 422 and "client_order_id" in text and "unique" in text


@contextlib.contextmanager
def _shape(what: str) -> Iterator[None]:
    """Alpaca's JSON in a shape we cannot read becomes a `ProviderError` naming it."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, InvalidOperation) as e:
        raise ProviderError(f"{what} has an unexpected shape: {type(e).__name__}: {e}") from e


# Alpaca stamps times with up to nine fractional digits; datetime keeps six.
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _ts(value: Any) -> datetime:
    text = _FRACTION.sub(r"\1", str(value))
    stamp = datetime.fromisoformat(text)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _decimal(value: Any) -> Decimal:
    number = Decimal(str(value))
    if not number.is_finite() or number < 0:
        raise ValueError(f"quantity {value!r} is not a number >= 0")
    return number


def _plain(number: Decimal) -> str:
    """A quantity spelled one way however Alpaca wrote it: 10, 10.0 and 1E+1 are all `10`."""
    return format(number.normalize(), "f")


def _float_or_none(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def _nothing_held(client_order_id: str) -> tuple[float, float]:
    return 0.0, 0.0
