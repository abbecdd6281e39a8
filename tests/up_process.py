"""`tradeos-lab up` run as a user runs it, in the background and not on a terminal: the one helper
of every test that starts a whole stack (the stack's own tests, the pipeline's, the apps').

It waits for the banner, then keeps reading what `up` prints (so a long run never blocks on a
full pipe) for tests that look at its running summary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tradeos_lab.stack.runtime import RuntimeInfo, read_runtime

TRADEOS_LAB = str(Path(sys.executable).with_name("tradeos-lab"))


def up_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without a developer's own TRADEOS_* settings, on `data_dir`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRADEOS_") or k.startswith("TRADEOS_TEST_")
    }
    env.update({"TRADEOS_DATA_DIR": str(data_dir), **extra})
    return env


def read_banner(proc: subprocess.Popen[str], what: str) -> str:
    """What a foreground command prints up to its "press Ctrl-C" line (it is up by then)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "press Ctrl-C" in line:
            return "".join(lines)
    stderr = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"{what} never came up: {''.join(lines)} {stderr}")


class UpProcess:
    """`tradeos-lab up ARGS` in the background, returned once it says it is up."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [TRADEOS_LAB, "up", *args],
            env=up_env(data_dir, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = read_banner(self.proc, "up")
        info = read_runtime(data_dir)
        assert info is not None, "up wrote no runtime file"
        #: The stack as `up` started it (its servers' pids, health URL).
        self.info: RuntimeInfo = info
        #: What `up` printed after its banner (the running summary), line by line.
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def printed(self, text: str, timeout: float) -> bool:
        """Whether `up` prints a line containing `text` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.output):
                return True
            time.sleep(0.2)
        return any(text in line for line in self.output)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal `up` (if still running) and wait for it, and for the last of its output;
        killed if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(30)
        self._reader.join(10)
        return code
