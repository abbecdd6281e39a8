"""Promotion: a backtest run's strategy and parameters pushed to the paper pipeline, on record.

    promotion = lab.research.promote(run_id)     # from a notebook
    tradeos-lab promote RUN_ID                   # from a shell

Only a finished single backtest is promoted (a sweep or walk-forward picks parameters: backtest
the chosen ones first, so the evidence is one run), and only while the strategy's code is the
code that run tested (its code hash). The promotion is kept in the records' system config under
`PROMOTED_KEY` (strategy name -> run id, parameters, code hash; its history says who promoted
what, when and why), and an `audit` entry is published and kept. The pipeline's Signal Engine
(`tradeos-lab up`, `tradeos-lab service signal_engine`, or `lab.pipeline.start()` in a kernel)
follows that key without a restart and trades the promoted run from its next bar; that engine is
the one place a promotion runs, so a promoted strategy never trades twice.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tradeos_lab.contracts import Audit, AuditMessage, new_message
from tradeos_lab.errors import TransientError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.services.signal_engine import PROMOTED_KEY
from tradeos_lab.research.runs import RunRecord, load_run
from tradeos_lab.strategies import Strategy, get_strategy
from tradeos_lab.strategies.base import strategy_hash

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.stores.records import RecordsStore

PRODUCER: Final = "research"


class KernelOnlyPromotionWarning(UserWarning):
    """A promoted strategy defined in a notebook or script (`__main__`): only a Signal Engine
    inside that process can import it; one in another process refuses the promotion."""


@dataclass(frozen=True)
class Promotion:
    """A promoted run: the evidence and the strategy built from it, as the pipeline will run it."""

    run: RunRecord
    strategy: Strategy[Any]

    @property
    def run_id(self) -> uuid.UUID:
        return self.run.id

    def entry(self) -> dict[str, Any]:
        """What `PROMOTED_KEY` keeps for the strategy."""
        cls = type(self.strategy)
        return {
            "run_id": str(self.run.id),
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "parameters": self.strategy.params.model_dump(mode="json"),
            "strategy_hash": self.run.strategy_hash,
        }


def promotable(records: RecordsStore, run_id: uuid.UUID | str) -> Promotion:
    """The run and the strategy it tested, rebuilt with its parameters; `ValidationError` for a
    run that is not a finished backtest or whose strategy's code has changed since."""
    run = load_run(records, run_id)
    if run.kind != "backtest":
        raise ValidationError(
            f"run {run.id} is a {run.kind}; promote a backtest: backtest the parameters you "
            "chose from it and promote that run"
        )
    if run.state != "succeeded":
        raise ValidationError(f"run {run.id} is {run.state}; only a finished backtest is promoted")
    cls = get_strategy(run.strategy)
    if run.strategy_hash is not None and strategy_hash(cls) != run.strategy_hash:
        raise ValidationError(
            f"the code of strategy {run.strategy!r} changed since run {run.id} tested it; "
            "backtest it again and promote the new run"
        )
    return Promotion(run=run, strategy=cls(run.parameters.get("strategy") or {}))


def record_promotion(lab: Lab, promotion: Promotion, *, actor: str, reason: str) -> None:
    """Keep the promotion under `PROMOTED_KEY` (its history says who, when and why) and
    publish its `audit` entry, kept in the records too."""
    name = promotion.strategy.name
    entry = promotion.entry()
    promoted = dict(lab.records.get_config(PROMOTED_KEY) or {})
    before = promoted.get(name)
    promoted[name] = entry
    lab.records.set_config(PROMOTED_KEY, promoted, changed_by=actor, reason=reason)
    payload = Audit(
        actor=actor,
        action="strategy.promote",
        target=f"strategy:{name}",
        old_value=before,
        new_value=entry,
        reason=reason,
    )
    message = new_message(payload, producer=PRODUCER)
    lab.bus.publish(Stream.AUDIT, message)
    # Kept at once too (the audit trail keeps it again from the bus, once per message id).
    if isinstance(message, AuditMessage):
        with contextlib.suppress(TransientError):
            lab.records.record_audit(message)


def promote(
    lab: Lab,
    run_id: uuid.UUID | str,
    *,
    actor: str,
    reason: str | None = None,
) -> Promotion:
    """Promote run `run_id`: the promotion recorded and audited (see the module docstring), for
    the pipeline's Signal Engine to trade."""
    if not actor.strip():
        raise ValidationError("a promotion needs an actor for the audit trail")
    promotion = promotable(lab.records, run_id)
    why = reason or (
        f"backtest run {promotion.run_id} of {promotion.strategy!r}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in promotion.run.metrics.items() if v is not None)
    )
    record_promotion(lab, promotion, actor=actor.strip(), reason=why)
    cls = type(promotion.strategy)
    if cls.__module__ == "__main__":
        warnings.warn(
            KernelOnlyPromotionWarning(
                f"strategy {promotion.strategy.name!r} is defined in this notebook or script "
                f"({cls.__module__}:{cls.__qualname__}): only the Signal Engine started in this "
                "kernel (lab.pipeline.start()) can run it; a pipeline in other processes "
                "(tradeos-lab up) refuses it on a risk event. Move the class to a module or a "
                ".py file, backtest it from there and promote that run."
            ),
            stacklevel=2,
        )
    return promotion


def promoted(records: RecordsStore) -> dict[str, dict[str, Any]]:
    """Strategy name -> the run it was last promoted from (`Promotion.entry`)."""
    return dict(records.get_config(PROMOTED_KEY) or {})
