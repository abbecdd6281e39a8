"""Kill switches on the machine's Redis: arming, scopes, sources, expiry, a lost registry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from tradeos_lab.contracts.enums import Side
from tradeos_lab.errors import DependencyUnavailable, TradingHalted, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import (
    Decision,
    Flags,
    KillMode,
    KillScope,
    KillSource,
    KillSwitch,
    KillSwitches,
    decide,
    reduces_exposure,
)


@pytest.fixture
def trail() -> list[dict[str, object]]:
    """Where the kill switches of a test put their audit records (in a lab: the audit stream)."""
    return []


@pytest.fixture
def switches(shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, object]]) -> KillSwitches:
    """The operator's: manual switches."""
    return KillSwitches(shared_redis, keys=keys, source=KillSource.MANUAL, audit=trail.append)


@pytest.fixture
def agent(shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, object]]) -> KillSwitches:
    """What the agent and the services hold: agent switches only."""
    return KillSwitches(shared_redis, keys=keys, source=KillSource.AGENT, audit=trail.append)


@pytest.fixture
def armed(switches: KillSwitches) -> KillSwitches:
    switches.arm(actor="ops:alice", reason="trading day start")
    return switches


def ops(**kw: object) -> dict[str, object]:
    return {"actor": "ops:alice", "reason": "test", **kw}


# ---- kill switches ----------------------------------------------------------------------------


def test_a_registry_that_was_never_armed_reads_halted(switches: KillSwitches) -> None:
    decision = switches.check_order("momentum", "AAPL", "sell", 1, book=None)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED
    assert "arms it" in decision.reason
    state = switches.state()
    assert (state.reachable, state.armed, state.mode) == (True, False, KillMode.HALTED)
    with pytest.raises(TradingHalted):
        decision.raise_if_denied()


def test_an_armed_registry_without_switches_lets_orders_through(armed: KillSwitches) -> None:
    decision = armed.check_order("momentum", "AAPL", "buy", 1, book=None)
    assert decision.allowed
    assert decision.mode is None
    decision.raise_if_denied()
    state = armed.state()
    assert (state.armed, state.mode, state.switches) == (True, None, ())
    assert state.armed_by is not None
    assert state.armed_by["actor"] == "ops:alice"


def test_global_halt_blocks_every_new_order_but_never_cancels(armed: KillSwitches) -> None:
    record = armed.engage("global", "HALTED", **ops(reason="market halt"))
    assert record["event"] == "kill_switch.engaged"
    for side in ("buy", "sell"):
        decision = armed.check_order("momentum", "AAPL", side, 1, book=None)
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
        assert "market halt" in decision.reason
    assert armed.check_cancel("momentum", "AAPL").allowed
    assert armed.state().mode is KillMode.HALTED


def test_reducing_mode_without_a_position_book_lets_no_order_through(
    armed: KillSwitches,
) -> None:
    armed.engage("global", KillMode.REDUCING, **ops())
    for side in ("buy", "sell"):
        decision = armed.check_order("momentum", "AAPL", side, 1, book=None)
        assert not decision.allowed
        assert decision.mode is KillMode.REDUCING
        assert "no position book" in decision.reason
    assert armed.state().mode is KillMode.REDUCING


def test_strategy_and_symbol_switches_apply_only_to_their_target(armed: KillSwitches) -> None:
    armed.engage("strategy", "HALTED", target="momentum", **ops())
    armed.engage(KillScope.SYMBOL, "REDUCING", target="TSLA", **ops())
    assert not armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    assert armed.check_order("meanrev", "AAPL", "buy", 1, book=None).allowed
    reducing_only = armed.check_order("meanrev", "TSLA", "sell", 1, book=None)
    assert (reducing_only.allowed, reducing_only.mode) == (False, KillMode.REDUCING)
    assert armed.state().mode is None  # no global switch
    assert len(armed.state().switches) == 2


def test_halted_beats_reducing_whatever_the_scope(armed: KillSwitches, agent: KillSwitches) -> None:
    armed.engage("global", "REDUCING", **ops())
    agent.engage("symbol", "HALTED", target="AAPL", **ops(actor="agent"))
    decision = armed.check_order("momentum", "AAPL", "sell", 1, book=None)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED


def test_the_agent_can_neither_replace_nor_clear_a_manual_halt(
    armed: KillSwitches, agent: KillSwitches
) -> None:
    armed.engage("global", "HALTED", **ops())
    agent.engage("global", "REDUCING", **ops(actor="agent"))
    agent.clear("global", **ops(actor="agent"))
    with pytest.raises(TypeError):  # the agent's API cannot even name another source
        agent.clear("global", source="manual", **ops(actor="agent"))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        agent.engage("global", "REDUCING", source="manual", **ops())  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="operator"):
        agent.arm(**ops(actor="agent"))
    decision = armed.check_order("momentum", "AAPL", "sell", 1, book=None)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED


def test_a_reconciliation_halt_outlives_the_agent_and_lifts_by_its_source_or_the_operator(
    armed: KillSwitches, agent: KillSwitches, shared_redis: redis.Redis, keys: Keys
) -> None:
    trail: list[dict[str, object]] = []
    reconciliation = KillSwitches(
        shared_redis, keys=keys, source=KillSource.RECONCILIATION, audit=trail.append
    )
    with pytest.raises(ValidationError, match="cannot expire"):
        reconciliation.engage("symbol", "REDUCING", target="AAPL", ttl_seconds=60, **ops())
    with pytest.raises(ValidationError, match="operator"):
        reconciliation.arm(**ops())
    reconciliation.engage("symbol", "REDUCING", target="AAPL", **ops(actor="reconciliation:alpaca"))
    agent.clear("symbol", target="AAPL", **ops(actor="agent"))
    armed.clear("symbol", target="AAPL", **ops())  # the manual source's own (none) only
    decision = armed.check_order("momentum", "AAPL", "buy", 1, book=None)
    assert (decision.allowed, decision.mode) == (False, KillMode.REDUCING)
    assert "reconciliation switch symbol:AAPL" in decision.reason
    # The operator path clears it by naming its source (`operator.clear(source=...)`).
    operator_side = KillSwitches(
        shared_redis, keys=keys, source="reconciliation", audit=trail.append
    )
    record = operator_side.clear("symbol", target="AAPL", actor="user:ops", reason="checked")
    assert record["cleared"]["actor"] == "reconciliation:alpaca"
    assert armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed


def test_a_manual_halt_cannot_expire_and_lifts_only_by_an_audited_clear(
    armed: KillSwitches,
) -> None:
    with pytest.raises(ValidationError):
        armed.engage("global", "HALTED", ttl_seconds=60, **ops())
    armed.engage("symbol", "HALTED", target="AAPL", **ops(reason="bad prints"))
    for actor, reason in (("", "x"), ("ops", ""), ("ops", "   "), (None, "x")):
        with pytest.raises(ValidationError):
            armed.clear("symbol", target="AAPL", actor=actor, reason=reason)  # type: ignore[arg-type]
    assert not armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed

    record = armed.clear("symbol", target="AAPL", actor="ops:bob", reason="prints corrected")
    assert record["event"] == "kill_switch.cleared"
    assert (record["actor"], record["reason"]) == ("ops:bob", "prints corrected")
    assert record["cleared"]["mode"] == "HALTED"
    assert record["cleared"]["reason"] == "bad prints"
    assert record["at"].endswith("+00:00")
    assert armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    again = armed.clear("symbol", target="AAPL", actor="ops:bob", reason="twice")
    assert again["cleared"] is None


def test_an_agent_switch_may_expire_by_its_own_ttl(
    armed: KillSwitches, agent: KillSwitches, keys: Keys
) -> None:
    agent.engage("strategy", "HALTED", target="momentum", ttl_seconds=0.3, **ops())
    assert not armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    time.sleep(0.4)
    assert armed.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    assert armed.refresh() is True
    assert armed.redis.hlen(keys.kill_switches()) == 1  # only the sentinel is left


def test_a_lost_registry_reads_halted_until_armed_again(armed: KillSwitches, keys: Keys) -> None:
    armed.engage("symbol", "HALTED", target="AAPL", **ops())
    armed.redis.delete(keys.kill_switches())  # what eviction or a flush would do
    for symbol in ("AAPL", "MSFT"):
        decision = armed.check_order("momentum", symbol, "sell", 1, book=None)
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
    # A switch written into the lost registry does not make it trustworthy again.
    armed.engage("symbol", "REDUCING", target="TSLA", **ops())
    assert not armed.check_order("momentum", "MSFT", "buy", 1, book=None).allowed
    assert armed.state().mode is KillMode.HALTED
    assert armed.refresh() is False

    record = armed.arm(actor="ops:alice", reason="registry lost; switches reviewed")
    assert record["was_armed"] is False
    assert armed.check_order("momentum", "MSFT", "buy", 1, book=None).allowed
    assert not armed.check_order("momentum", "TSLA", "buy", 1, book=None).allowed


def test_an_expired_registry_reads_halted(armed: KillSwitches, keys: Keys) -> None:
    armed.redis.pexpire(keys.kill_switches(), 50)
    time.sleep(0.1)
    assert not armed.check_order("momentum", "AAPL", "sell", 1, book=None).allowed
    assert armed.refresh() is False


@pytest.mark.parametrize(
    "stored",
    [b"not json", b'{"mode": "PAUSED"}', b"[]", b'{"scope": "global"}'],
)
def test_a_corrupt_or_unknown_switch_reads_halted(
    armed: KillSwitches, keys: Keys, stored: bytes
) -> None:
    armed.redis.hset(keys.kill_switches(), "global:*:manual", stored)
    decision = armed.check_order("momentum", "AAPL", "sell", 1, book=None)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED
    assert armed.state().mode is KillMode.HALTED


def test_the_registry_ttl_is_long_and_refreshed_by_writes_and_heartbeats(
    armed: KillSwitches, keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    key = keys.kill_switches()
    assert armed.redis.ttl(key) > 29 * 86_400
    armed.redis.expire(key, 1000)
    Flags(armed.redis, keys=keys, settings=settings_factory()).workers.heartbeat("execution", "w1")
    assert armed.redis.ttl(key) > 29 * 86_400
    armed.redis.expire(key, 1000)
    armed.engage("global", "REDUCING", **ops())
    assert armed.redis.ttl(key) > 29 * 86_400


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scope": "global", "mode": "PAUSED"},
        {"scope": "global", "mode": "halted"},
        {"scope": "account", "mode": "HALTED", "target": "x"},
        {"scope": "global", "mode": "HALTED", "target": "AAPL"},
        {"scope": "symbol", "mode": "HALTED"},
        {"scope": "symbol", "mode": "HALTED", "target": "\u0410APL"},
        {"scope": "symbol", "mode": "HALTED", "target": "\u017fPY"},
        {"scope": "strategy", "mode": "HALTED", "target": "has space"},
        {"scope": "strategy", "mode": "HALTED", "target": "\u0131ngest"},
        {"scope": "global", "mode": "HALTED", "ttl_seconds": -1},
        {"scope": "global", "mode": "HALTED", "ttl_seconds": float("nan")},
        {"scope": "global", "mode": None},
    ],
)
def test_bad_kill_switch_input_raises_and_writes_nothing(
    armed: KillSwitches,
    agent: KillSwitches,
    keys: Keys,
    trail: list[dict[str, object]],
    kwargs: dict[str, object],
) -> None:
    before = armed.redis.hgetall(keys.kill_switches())
    audited = len(trail)
    scope, mode = kwargs.pop("scope"), kwargs.pop("mode")
    with pytest.raises(ValidationError):
        agent.engage(scope, mode, actor="ops", reason="x", **kwargs)  # type: ignore[arg-type]
    assert armed.redis.hgetall(keys.kill_switches()) == before
    assert len(trail) == audited


def test_bad_order_checks_raise_instead_of_answering(armed: KillSwitches) -> None:
    with pytest.raises(ValidationError):
        armed.check_order("momentum", "not a ticker", "buy", 1, book=None)
    with pytest.raises(ValidationError):
        armed.check_order("", "AAPL", "buy", 1, book=None)
    for side, quantity in (("hold", 1), ("BUY ", 1), ("buy", 0), ("buy", -1), ("sell", math.nan)):
        with pytest.raises(ValidationError):
            armed.check_order("momentum", "AAPL", side, quantity, book=None)
    with pytest.raises(ValidationError):
        armed.check_order("momentum", "AAPL", "buy", True, book=None)


# ---- does an order reduce exposure? ----------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "side", "quantity", "reduces"),
    [
        (10, Side.SELL, 10, True),  # closes the long
        (10, Side.SELL, 4, True),
        (10, Side.SELL, 11, False),  # crosses through zero into a short
        (10, Side.BUY, 1, False),
        (-5, Side.BUY, 5, True),
        (-5, Side.BUY, 6, False),
        (-5, Side.SELL, 1, False),
        (0, Side.BUY, 1, False),  # a flat position: any order opens one
        (0, Side.SELL, 1, False),
    ],
)
def test_an_order_reduces_exposure_only_toward_zero_without_crossing(
    position: float, side: Side, quantity: float, reduces: bool
) -> None:
    assert reduces_exposure(position, side, quantity) is reduces


@given(
    position=st.integers(-10_000, 10_000),
    side=st.sampled_from(Side),
    quantity=st.integers(1, 20_000),
)
def test_reducing_means_the_position_shrinks_and_keeps_its_sign(
    position: int, side: Side, quantity: int
) -> None:
    after = position + (quantity if side is Side.BUY else -quantity)
    shrinks_same_side = abs(after) < abs(position) and after * position >= 0
    assert reduces_exposure(position, side, quantity) is shrinks_same_side
    mirrored = Side.SELL if side is Side.BUY else Side.BUY
    assert reduces_exposure(-position, mirrored, quantity) is shrinks_same_side


@given(
    position=st.floats(-1e9, 1e9, allow_nan=False),
    side=st.sampled_from(Side),
    quantity=st.floats(1e-9, 1e9, allow_nan=False),
)
def test_a_reducing_order_never_leaves_a_larger_or_flipped_position(
    position: float, side: Side, quantity: float
) -> None:
    if reduces_exposure(position, side, quantity):
        after = position + (quantity if side is Side.BUY else -quantity)
        assert abs(after) <= abs(position)
        assert after * position >= 0


def test_under_reducing_only_a_reducing_order_goes_and_halted_beats_it() -> None:
    reducing = KillSwitch(
        KillScope.GLOBAL, "*", KillSource.MANUAL, KillMode.REDUCING, "ops", "drawdown", 0.0
    )
    halted = KillSwitch(
        KillScope.SYMBOL, "AAPL", KillSource.AGENT, KillMode.HALTED, "agent", "gap", 0.0
    )
    assert decide((reducing,), reduces=True).allowed
    assert not decide((reducing,), reduces=False).allowed
    assert decide((reducing, halted), reduces=True).mode is KillMode.HALTED
    assert decide((), reduces=False).allowed


# ---- one spelling per symbol and per strategy ------------------------------------------------


def test_a_halt_on_one_spelling_of_a_pair_covers_every_spelling(armed: KillSwitches) -> None:
    armed.engage("symbol", "HALTED", target="BTC-USD", **ops())
    for spelling in ("BTC-USD", "BTC/USD", "btc/usd", "Btc-Usd"):
        assert not armed.check_order("momentum", spelling, "buy", 1, book=None).allowed
    assert armed.clear("symbol", target="btc/usd", **ops())["cleared"] is not None
    assert armed.check_order("momentum", "BTC/USD", "buy", 1, book=None).allowed


def test_a_strategy_halt_covers_the_strategy_whatever_the_case(armed: KillSwitches) -> None:
    armed.engage("strategy", "HALTED", target="Momo:v2", **ops())
    for spelling in ("momo:v2", "MOMO:V2", "Momo:v2"):
        assert not armed.check_order(spelling, "AAPL", "buy", 1, book=None).allowed
    assert armed.check_order("momo:v3", "AAPL", "buy", 1, book=None).allowed
    assert [s.target for s in armed.state().switches] == ["momo:v2"]


# ---- every change is audited ------------------------------------------------------------------


def test_every_change_of_a_switch_reaches_the_audit_sink(
    switches: KillSwitches, agent: KillSwitches, trail: list[dict[str, object]]
) -> None:
    switches.arm(**ops(reason="start of day"))
    switches.engage("global", "REDUCING", **ops(reason="news"))
    agent.engage("symbol", "HALTED", target="AAPL", ttl_seconds=0.2, **ops(actor="agent:dd"))
    agent.engage("strategy", "HALTED", target="momentum", **ops(actor="agent:dd"))
    agent.clear("strategy", target="momentum", **ops(actor="agent:dd", reason="recovered"))
    switches.clear("global", **ops(reason="calm"))
    time.sleep(0.3)
    assert switches.refresh() is True  # drops the expired agent switch: that is a change too
    assert switches.refresh() is True  # nothing left to expire: nothing more to audit
    assert [(r["event"], r["actor"]) for r in trail] == [
        ("kill_switch.armed", "ops:alice"),
        ("kill_switch.engaged", "ops:alice"),
        ("kill_switch.engaged", "agent:dd"),
        ("kill_switch.engaged", "agent:dd"),
        ("kill_switch.cleared", "agent:dd"),
        ("kill_switch.cleared", "ops:alice"),
        ("kill_switch.expired", "system:expiry"),
    ]
    expired = trail[-1]
    assert (expired["scope"], expired["target"], expired["source"]) == ("symbol", "AAPL", "agent")
    assert expired["cleared"]["actor"] == "agent:dd"  # type: ignore[index]


def test_kill_switches_cannot_be_built_without_an_audit_sink(
    shared_redis: redis.Redis, keys: Keys
) -> None:
    with pytest.raises(TypeError):
        KillSwitches(shared_redis, keys=keys, source="agent")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="audit"):
        KillSwitches(shared_redis, keys=keys, source="agent", audit=None)  # type: ignore[arg-type]


def test_a_change_whose_audit_fails_raises(shared_redis: redis.Redis, keys: Keys) -> None:
    def unreachable_trail(record: dict[str, object]) -> None:
        raise DependencyUnavailable("bus Redis: ConnectionError")

    agent = KillSwitches(shared_redis, keys=keys, source="agent", audit=unreachable_trail)
    with pytest.raises(DependencyUnavailable):
        agent.engage("global", "HALTED", **ops(actor="agent"))


def test_switches_read_beside_other_reads_fail_closed_on_an_error_reply(
    switches: KillSwitches, shared_redis: redis.Redis, keys: Keys
) -> None:
    switches.arm(actor="user:test", reason="test")
    pipe = shared_redis.pipeline(transaction=False)
    pipe.ping()  # another read of the same round trip
    read = switches.queue_switches(pipe, [("momo", "AAPL")])
    assert read(pipe.execute(raise_on_error=False)[1:])["momo", "AAPL"] == ()  # none engaged
    shared_redis.delete(keys.kill_switches())
    shared_redis.set(keys.kill_switches(), "not a hash")  # HMGET now answers WRONGTYPE
    pipe = shared_redis.pipeline(transaction=False)
    read = switches.queue_switches(pipe, [("momo", "AAPL")])
    decision = read(pipe.execute(raise_on_error=False))["momo", "AAPL"]
    assert isinstance(decision, Decision) and not decision.allowed
    assert "failing closed" in (decision.reason or "")
    gone = read(redis.ConnectionError("gone"))["momo", "AAPL"]
    assert isinstance(gone, Decision) and not gone.allowed
