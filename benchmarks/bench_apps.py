"""The monitor app's speed and memory, each beside a peer measured in the same run.

    python benchmarks/bench_apps.py [--fills 100] [--refreshes 1000]

Starts an embedded stack owned by this process (no pipeline: the benchmark publishes the fills
itself, so nothing else moves), serves the apps with Voila as `tradeos-lab apps` does, and opens
the monitor in Debian's headless Chromium (/usr/bin/chromium).

- Fill to DOM: `--fills` fills published on `fills.raw` one at a time, each timed from just
  before its XADD to the moment its row is in the monitor's DOM (a MutationObserver in the page
  stamps it; page and benchmark share the machine's clock). Peer: the same XADD timed to a
  blocking XREAD of another connection (what the monitor's kernel waits on), i.e. the bus's own
  share of the figure. p50 and p99 of both, and their ratio.
- Memory: the app kernel's resident memory (the Voila kernel process behind the page) before and
  after `--refreshes` refreshes, counted by the page's own refresh counter, while fills keep
  arriving so every refresh draws; growth per 1,000 refreshes. Peer: the same number of
  refreshes of the same `Monitor` in this process (no page, no widget messages), its growth.

About two minutes with the defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import psutil
import redis

import tradeos_lab as tl
from tradeos_lab.apps.monitor import Monitor
from tradeos_lab.apps.server import serve_apps
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "apps"))
from apps_support import fill_message

CHROMIUM = "/usr/bin/chromium"

_OBSERVER = """
() => {
  window.__seen = {};
  const table = () => document.querySelector('.tl-fills\\\\.raw');
  const check = () => {
    const t = table();
    if (!t) return;
    for (const cell of t.querySelectorAll('td')) {
      const text = cell.textContent;
      if (text.startsWith('bench-') && !(text in window.__seen)) window.__seen[text] = Date.now();
    }
  };
  new MutationObserver(check).observe(document.body, {childList: true, subtree: true,
                                                      characterData: true});
  check();
}
"""


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def fill_to_dom(lab: Lab, page: Any, n: int) -> list[float]:
    page.evaluate(_OBSERVER)
    latencies = []
    for _ in range(n):
        execution_id = f"bench-{uuid.uuid4().hex[:12]}"
        sent_ms = time.time() * 1000
        lab.bus.publish(Stream.FILLS_RAW, fill_message(execution_id))
        page.wait_for_function("(id) => id in window.__seen", arg=execution_id, timeout=60_000)
        latencies.append(page.evaluate("(id) => window.__seen[id]", execution_id) - sent_ms)
    return latencies


def bus_peer(lab: Lab, n: int) -> list[float]:
    """XADD -> a blocking XREAD on another connection, as the kernel reads."""
    key = lab.bus.stream_key(Stream.FILLS_RAW)
    reader = redis.Redis(connection_pool=lab.bus.redis.connection_pool)
    latencies = []
    for _ in range(n):
        last = reader.xrevrange(key, count=1)
        after = last[0][0] if last else "0-0"
        got = threading.Event()
        stamp: list[float] = []

        def read(
            after: Any = after, got: threading.Event = got, stamp: list[float] = stamp
        ) -> None:
            reader.xread({key: after}, block=5_000, count=1)
            stamp.append(time.perf_counter())
            got.set()

        thread = threading.Thread(target=read)
        thread.start()
        time.sleep(0.01)  # the reader is blocked before the write, as the kernel is
        start = time.perf_counter()
        lab.bus.publish(Stream.FILLS_RAW, fill_message(f"peer-{uuid.uuid4().hex[:12]}"))
        got.wait(10)
        thread.join()
        latencies.append((stamp[0] - start) * 1000)
    return latencies


def kernel_process(server_pid: int) -> psutil.Process:
    kernels = [
        p
        for p in psutil.Process(server_pid).children(recursive=True)
        if "ipykernel" in " ".join(p.cmdline())
    ]
    if len(kernels) != 1:
        raise SystemExit(f"expected one app kernel, found {len(kernels)}")
    return kernels[0]


def refreshes(page: Any) -> int:
    return int(page.get_attribute(".tl-status", "data-refreshes") or 0)


def kernel_growth(
    lab: Lab, page: Any, kernel: psutil.Process, n: int
) -> tuple[float, float, float]:
    """(RSS MB before, after, seconds) over `n` refreshes of the page's kernel, fills arriving."""
    stop = threading.Event()

    def publish() -> None:
        while not stop.wait(0.05):
            lab.bus.publish(Stream.FILLS_RAW, fill_message(f"mem-{uuid.uuid4().hex[:12]}"))

    feeder = threading.Thread(target=publish, daemon=True)
    feeder.start()
    try:
        start_count = refreshes(page)
        page.wait_for_function(
            "(n) => +document.querySelector('.tl-status').dataset.refreshes >= n",
            arg=start_count + 200,
            timeout=600_000,
        )  # warm up: every panel drawn, every table full
        before, begun, first = kernel.memory_info().rss, time.monotonic(), refreshes(page)
        page.wait_for_function(
            "(n) => +document.querySelector('.tl-status').dataset.refreshes >= n",
            arg=first + n,
            timeout=1_200_000,
        )
        after, done = kernel.memory_info().rss, refreshes(page) - first
        return before / 2**20, after / 2**20, done, time.monotonic() - begun
    finally:
        stop.set()
        feeder.join()


def in_process_growth(lab: Lab, n: int) -> tuple[float, float]:
    """RSS MB before and after `n` refreshes of a `Monitor` in this process."""
    monitor = Monitor(lab.settings, every_s=0, slow_every_s=1.0)
    me = psutil.Process()
    try:
        for i in range(200):
            lab.bus.publish(Stream.FILLS_RAW, fill_message(f"warm-{i}"))
            monitor.refresh()
        before = me.memory_info().rss
        for i in range(n):
            lab.bus.publish(Stream.FILLS_RAW, fill_message(f"proc-{i}"))
            monitor.refresh()
        return before / 2**20, me.memory_info().rss / 2**20
    finally:
        monitor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fills", type=int, default=100)
    parser.add_argument("--refreshes", type=int, default=1_000)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is absent: install Debian's chromium")
    from playwright.sync_api import sync_playwright

    warnings.simplefilter("ignore")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-apps-"))
    lab = tl.connect(data_dir=data_dir, pipeline_symbols="BTC-USD")
    served = serve_apps(lab.settings)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(120_000)
            page.goto(served.url("monitor"))
            page.wait_for_selector(".tl-status[data-refreshes]")

            dom = fill_to_dom(lab, page, args.fills)
            peer = bus_peer(lab, args.fills)
            dom50, dom99 = percentiles(dom)
            bus50, bus99 = percentiles(peer)
            print(
                f"fill -> monitor DOM ({args.fills} fills): p50 {dom50:.1f} ms, p99 {dom99:.1f} ms"
            )
            print(f"peer, fill -> blocking XREAD:   p50 {bus50:.2f} ms, p99 {bus99:.2f} ms")
            print(f"ratio DOM / bus: p50 {dom50 / bus50:.0f}x, p99 {dom99 / bus99:.0f}x")

            kernel = kernel_process(served.process.pid)
            before, after, done, seconds = kernel_growth(lab, page, kernel, args.refreshes)
            per_k = (after - before) * 1000 / done
            print(
                f"app kernel RSS over {done:.0f} refreshes ({seconds:.0f} s, fills arriving): "
                f"{before:.1f} -> {after:.1f} MB, {per_k:+.2f} MB per 1,000 refreshes"
            )
            browser.close()
        mine_before, mine_after = in_process_growth(lab, args.refreshes)
        mine_per_k = (mine_after - mine_before) * 1000 / args.refreshes
        print(
            f"peer, the same Monitor in this process: {mine_before:.1f} -> {mine_after:.1f} MB, "
            f"{mine_per_k:+.2f} MB per 1,000 refreshes"
        )
    finally:
        served.stop()
        lab.close()


if __name__ == "__main__":
    main()
