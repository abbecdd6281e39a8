"""Start-up times of the workbench, next to a bare redis-server start measured in the same run.

    python benchmarks/bench_startup.py [--runs 5]

Prints: a bare `redis-server` start (until PING answers); `tradeos-lab up` until `/healthz` says
every part is up; `tl.connect()` attaching to that running stack until the first bus round trip
(XADD then XRANGE of the entry); and each as a multiple of the bare start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

import tradeos_lab as tl
from tradeos_lab.stack.redis_server import RedisServerProcess, RedisServerSpec, redis_server_binary
from tradeos_lab.stack.runtime import read_runtime

TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))


def bare_redis_start(workdir: Path) -> float:
    spec = RedisServerSpec(
        role="bare",
        directory=workdir,
        password=secrets.token_hex(8),
        policy="noeviction",
        socket_path=workdir / "bare.sock",
    )
    server = RedisServerProcess(spec, binary=redis_server_binary())
    start = time.perf_counter()
    server.start()
    elapsed = time.perf_counter() - start
    server.stop()
    return elapsed


def up_until_healthy(data_dir: Path) -> tuple[float, subprocess.Popen[bytes]]:
    env = {**os.environ, "TRADEOS_DATA_DIR": str(data_dir), "TRADEOS_LOG_LEVEL": "WARNING"}
    start = time.perf_counter()
    proc = subprocess.Popen([TRADEOS_LAB, "up"], env=env, stdout=subprocess.DEVNULL)
    deadline = start + 120
    while time.perf_counter() < deadline:
        info = read_runtime(data_dir)
        if info is not None and info.health_url:
            try:
                with urllib.request.urlopen(f"{info.health_url}/healthz", timeout=2) as r:
                    if json.loads(r.read())["status"] == "up":
                        return time.perf_counter() - start, proc
            except OSError:
                pass
        if proc.poll() is not None:
            raise SystemExit(f"tradeos-lab up exited with {proc.returncode}")
        time.sleep(0.01)
    proc.kill()
    raise SystemExit("tradeos-lab up did not become healthy within 120 s")


def connect_to_first_round_trip(data_dir: Path) -> float:
    start = time.perf_counter()
    lab = tl.connect(data_dir=data_dir)
    r: redis.Redis = lab.bus.redis
    entry_id = r.xadd("bench:startup", {"m": b"ping"})
    assert r.xrange("bench:startup", entry_id, entry_id)
    elapsed = time.perf_counter() - start
    lab.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bare, up, connect = [], [], []
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        for i in range(args.runs):
            work = Path(tmp) / f"bare{i}"
            work.mkdir()
            bare.append(bare_redis_start(work))
            data_dir = Path(tmp) / f"lab{i}"
            seconds, proc = up_until_healthy(data_dir)
            up.append(seconds)
            try:
                connect.append(connect_to_first_round_trip(data_dir))
            finally:
                proc.terminate()
                proc.wait(30)
    b, u, c = statistics.median(bare), statistics.median(up), statistics.median(connect)
    print(f"runs: {args.runs} (medians)")
    print(f"bare redis-server start to PING        {b * 1000:8.1f} ms   1.0x")
    for label, value in (
        ("tradeos-lab up to all-healthy", u),
        ("tl.connect() to first bus round trip", c),
    ):
        print(f"{label:<38} {value * 1000:8.1f} ms   {value / b:5.1f}x bare redis-server")


if __name__ == "__main__":
    main()
