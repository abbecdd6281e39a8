"""Time-ordered message ids (UUIDv7, RFC 9562).

Ids sort by creation time, so a stream, a log or a table ordered by id is ordered by time, and
the time a message was made can be read back from its id. Within one process ids are strictly
increasing, even when several are made in the same millisecond or the clock steps back.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from datetime import UTC, datetime

from tradeos_lab.errors import ContractError

MESSAGE_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN.removeprefix("^").removesuffix("$"))

_COUNTER_MAX = 0xFFF  # the 12 bits of `rand_a`, used as a counter (RFC 9562 method 1)
_ENTROPY_BYTES = 4096
"""How much of the OS's CSPRNG an id generator reads at once: a stage makes ids for every
message it sends, and a system call for each 8 bytes cost more than the rest of the id."""


class _Clock:
    """The last millisecond and counter handed out, so ids never go backwards, and the random
    bytes read from the OS and not used yet."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = 0
        self.counter = 0
        self.forget_entropy()

    def forget_entropy(self) -> None:
        """Drop the unused random bytes (a forked child must not use its parent's)."""
        self._entropy = b""
        self._used = 0

    def _random(self, nbytes: int) -> int:
        if self._used + nbytes > len(self._entropy):
            self._entropy = os.urandom(_ENTROPY_BYTES)
            self._used = 0
        start, self._used = self._used, self._used + nbytes
        return int.from_bytes(self._entropy[start : self._used], "big")

    def next_id(self) -> tuple[int, int, int]:
        """The millisecond, counter and 62 random bits of the next id."""
        with self.lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms > self.last_ms:
                self.last_ms = now_ms
                # a random start with the top bit clear leaves room for 2048 more ids this ms
                self.counter = self._random(2) >> 5
            else:
                # same millisecond, or the clock stepped back: keep counting from the last id
                self.counter += 1
                if self.counter > _COUNTER_MAX:
                    self.last_ms += 1
                    self.counter = self._random(2) >> 5
            return self.last_ms, self.counter, self._random(8) >> 2


_clock = _Clock()
os.register_at_fork(after_in_child=_clock.forget_entropy)


def new_message_id() -> str:
    """A new UUIDv7 as a lowercase canonical string, greater than every earlier one here."""
    ms, counter, rand_b = _clock.next_id()
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_message_id(value: object) -> bool:
    """True when `value` is a canonical lowercase UUIDv7 string."""
    return isinstance(value, str) and _MESSAGE_ID.fullmatch(value) is not None


def message_id_time(message_id: str) -> datetime:
    """The UTC millisecond at which `message_id` was made."""
    if not is_message_id(message_id):
        raise ContractError(f"{message_id!r} is not a UUIDv7 message id")
    ms = int(message_id[:8] + message_id[9:13], 16)
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def derived_message_id(parent_id: str, *, stage: str, index: int) -> str:
    """The id of output `index` that `stage` made from message `parent_id`: the same every time.

    A stage that handles a message again (a redelivery, a producer's duplicate) emits outputs
    with the same ids, so a downstream reader can tell a duplicate. The id carries the parent's
    millisecond (it sorts next to its cause) and 74 bits of a hash of (parent, stage, index).
    """
    if not is_message_id(parent_id):
        raise ContractError(f"{parent_id!r} is not a UUIDv7 message id")
    ms = int(parent_id[:8] + parent_id[9:13], 16)
    return keyed_message_id(ms, f"{parent_id}/{stage}/{index}")


def keyed_message_id(ms: int, key: str) -> str:
    """The id of the message `key` names, made at epoch millisecond `ms`: the same every time.

    For a message that is the same fact however often it is produced (a bar of a feed, an output
    of a stage): it sorts at `ms` and carries 74 bits of a hash of `key`.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    bits = int.from_bytes(digest, "big")
    rand_a = bits >> 116  # 12 bits
    rand_b = bits & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
