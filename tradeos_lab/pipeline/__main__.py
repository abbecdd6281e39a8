"""`python -m tradeos_lab.pipeline REF`: run one service in the foreground until SIGTERM / SIGINT.

REF is a registered service name, `module:Class` or `path.py:Class` (a service of one's own, or a
test's); the settings come from the environment and config file, as for every command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tradeos_lab.pipeline.registry import SERVICE_MODULES
from tradeos_lab.pipeline.runner import BATCH, resolve_service, run_service


def main(argv: Sequence[str] | None = None) -> int:
    from tradeos_lab.observability.logs import configure_logging
    from tradeos_lab.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m tradeos_lab.pipeline")
    parser.add_argument(
        "service", help=f"{', '.join(SERVICE_MODULES)}, module:Class or path.py:Class"
    )
    parser.add_argument("--instance", default=None, help="worker instance name (default host-pid)")
    parser.add_argument("--batch", type=int, default=BATCH, help="entries per read")
    args = parser.parse_args(argv)
    cls = resolve_service(args.service)
    settings = load_settings()
    configure_logging(cls.name, settings.log_level, settings.log_format)
    run_service(cls, settings, instance=args.instance, batch=args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
