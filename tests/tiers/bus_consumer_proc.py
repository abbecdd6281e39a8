"""A consumer process for the SIGKILL test: a position keeper with an idempotent effect.

Usage: python bus_consumer_proc.py REDIS_URL NAMESPACE MODE [POISON], MODE `hang` (sleep inside the
handler after its effect, to be SIGKILLed before the ack), `drain` (handle until idle, then exit 0)
or `poison` (like `drain`, but the process SIGKILLs itself inside the handler of the bar whose
minute is POISON, as a segfault or an OOM kill would; max_deliveries 2).
Every handler run is logged to `{ns}:test:runs`; the effect adds the bar's volume to
`{ns}:test:position` once per message, through `Bus.apply_once`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.tiers.bus import Bus, Delivery

sys.path.insert(0, str(Path(__file__).parent))
from bus_support import minute_of


def main() -> int:
    url, namespace, mode = sys.argv[1:4]
    poison = int(sys.argv[4]) if mode == "poison" else None
    client = make_redis(url, role="bus")
    keys = Keys(namespace)
    settings = load_settings(
        claim_idle_ms=60_000, namespace=namespace, max_deliveries=2 if poison is not None else 5
    )
    bus = Bus(client, keys=keys, settings=settings)
    consumer = bus.consumer(Stream.MARKET_DATA, "positions", "position-keeper-1", block_ms=100)
    position = f"{namespace}:test:position"

    def handle(d: Delivery) -> None:
        client.rpush(f"{namespace}:test:runs", f"{d.entry_id} {d.deliveries}")
        if minute_of(d.message) == poison:
            os.kill(os.getpid(), signal.SIGKILL)
        volume = d.message.payload.volume  # type: ignore[union-attr]
        bus.apply_once(d, lambda pipe: pipe.incrbyfloat(position, volume))
        if mode == "hang":
            client.rpush(f"{namespace}:test:effect-done", d.entry_id)
            time.sleep(3600)  # SIGKILLed here: the effect is durable, the ack never happens

    consumer.run(handle, idle_timeout_s=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
