"""The event bus: Redis Streams, consumer groups, ack after the handler, redelivery, dead letters.

`bus.py` publishes and manages groups, `consumer.py` consumes, `dead_letters.py` and
`trim_loss.py` handle what a group gives up on or loses, `inspection.py` looks inside, and
`wire.py` is the layer every part talks to Redis through. See docs/bus.md.
"""

from tradeos_lab.tiers.bus.bus import EFFECT_PENDING_TTL_S, Bus, TrimPolicy
from tradeos_lab.tiers.bus.consumer import Consumer, Delivery, Handler, PollResult
from tradeos_lab.tiers.bus.dead_letters import DeadLetterReason
from tradeos_lab.tiers.bus.inspection import BusInspector, GroupInfo
from tradeos_lab.tiers.bus.trim_loss import LossKind, TrimLoss
from tradeos_lab.tiers.bus.wire import FIELD, parse_id

__all__ = [
    "EFFECT_PENDING_TTL_S",
    "FIELD",
    "Bus",
    "BusInspector",
    "Consumer",
    "DeadLetterReason",
    "Delivery",
    "GroupInfo",
    "Handler",
    "LossKind",
    "PollResult",
    "TrimLoss",
    "TrimPolicy",
    "parse_id",
]
