"""A stand-in for `tradeos-lab up`: owns the embedded lake, serves its gateway and keeps writing.

Run as `python lake_owner_process.py DATA_DIR TOKEN`. Prints one JSON line {"url", "pid"} once
the gateway is up, then writes one BTC-USD minute bar every 20 ms until a line (or EOF) arrives on
stdin, and exits 0 after closing the gateway and the lake.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import pandas as pd

from tradeos_lab.settings import load_settings
from tradeos_lab.stores.lake import Lake, serve_gateway


def main() -> int:
    data_dir, token = sys.argv[1], sys.argv[2]
    stop = threading.Event()
    lake = Lake.open(load_settings(data_dir=data_dir))
    gateway = serve_gateway(lake, token)
    print(json.dumps({"url": gateway.url, "pid": os.getpid()}), flush=True)
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()

    ts = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)).floor("D")
    price = 100.0
    while not stop.wait(0.02):
        bar = pd.DataFrame(
            {
                "symbol": ["BTC-USD"],
                "timeframe": ["1m"],
                "ts": [ts],
                "open": [price],
                "high": [price + 1],
                "low": [price - 1],
                "close": [price + 0.5],
                "volume": [10.0],
            }
        )
        lake.write_bars(bar)
        ts += pd.Timedelta(minutes=1)
        price += 0.5
    gateway.shutdown()
    lake.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
