"""What the apps' tests (and their benchmark) share: a fill as Execution publishes one, and
`tradeos-lab up` started in the background."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tradeos_lab.contracts import Fill, Message, new_message


def fill_message(execution_id: str, *, symbol: str = "BTC-USD", price: float = 101.5) -> Message:
    """A fill of 2 at `price`, as the paper broker reports one."""
    return new_message(
        Fill(
            client_order_id=f"tl-{execution_id}",
            broker_order_id=f"paper-{execution_id}",
            execution_id=execution_id,
            symbol=symbol,
            side="buy",  # type: ignore[arg-type]
            quantity=2,
            price=price,
            fee=0.1,
            fee_currency="USD",
            liquidity="taker",  # type: ignore[arg-type]
            ts=datetime.now(UTC),
        ),
        producer="execution",
    )


TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))


def start_up(*args: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    """`tradeos-lab up ARGS` with only the given `TRADEOS_*` environment, and its banner (every
    line up to "press Ctrl-C"), once it is up."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    proc = subprocess.Popen(
        [TRADEOS_LAB, "up", *args],
        env={**environment, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "press Ctrl-C" in line:
            return proc, "".join(lines)
    proc.wait(30)
    raise AssertionError(f"up never came up (exit {proc.returncode}): {''.join(lines)}")
