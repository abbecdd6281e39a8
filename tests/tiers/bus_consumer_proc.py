"""A consumer process for the SIGKILL test: a position keeper with an idempotent effect.

Usage: python bus_consumer_proc.py REDIS_URL NAMESPACE MODE, MODE `hang` (sleep inside the handler
after its effect, to be SIGKILLed before the ack) or `drain` (handle until idle, then exit 0).
Every handler run is logged to `{ns}:test:runs`; the effect adds the bar's volume to
`{ns}:test:position` once per message, through `Bus.apply_once`.
"""

from __future__ import annotations

import sys
import time

from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.tiers.bus import Bus, Delivery


def main() -> int:
    url, namespace, mode = sys.argv[1:4]
    client = make_redis(url, role="bus")
    keys = Keys(namespace)
    bus = Bus(client, keys=keys, settings=load_settings(claim_idle_ms=60_000, namespace=namespace))
    consumer = bus.consumer(Stream.MARKET_DATA, "positions", "position-keeper-1", block_ms=100)
    position = f"{namespace}:test:position"

    def handle(d: Delivery) -> None:
        client.rpush(f"{namespace}:test:runs", f"{d.entry_id} {d.deliveries}")
        volume = d.message.payload.volume  # type: ignore[union-attr]
        bus.apply_once(d, lambda pipe: pipe.incrbyfloat(position, volume))
        if mode == "hang":
            client.rpush(f"{namespace}:test:effect-done", d.entry_id)
            time.sleep(3600)  # SIGKILLed here: the effect is durable, the ack never happens

    consumer.run(handle, idle_timeout_s=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
