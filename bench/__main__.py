"""``python -m bench`` (``make bench``): every benchmark, one after another, each in its own
process, with the commands recorded in docs/benchmarks.md. Results land in bench/results/.

    python -m bench            # the whole suite (about 45 minutes on 2 cores)
    python -m bench --quick    # small sizes, to check the suite runs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FULL: list[list[str]] = [
    ["bench.journey_load"],
    ["bench.engine_throughput", "--customers", "100000", "1000000"],
    ["bench.engine_throughput", "--postgres", "--customers", "100000", "1000000"],
    ["bench.engine_throughput", "--postgres", "--workers", "2", "--customers", "100000", "1000000"],
    ["bench.timer_cost"],
    ["bench.lateness"],
    ["bench.lateness", "--postgres", "--workers", "2"],
    ["bench.ingest_http"],
    ["bench.dispatch_throughput"],
    ["bench.segment_sweep"],
]
QUICK: list[list[str]] = [
    ["bench.journey_load", "--journeys", "100", "--repeat", "1"],
    ["bench.engine_throughput", "--customers", "2000"],
    ["bench.timer_cost", "--pending", "1000", "10000"],
    ["bench.lateness", "--rate", "500", "--seconds", "4"],
    ["bench.dispatch_throughput", "--deliveries", "1000", "--runs", "1"],
    ["bench.segment_sweep", "--customers", "500"],
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    failed = []
    for cmd in QUICK if args.quick else FULL:
        started = time.monotonic()
        print(f"\n$ python -m {' '.join(cmd)}", file=sys.stderr, flush=True)
        code = subprocess.call([sys.executable, "-m", *cmd], cwd=ROOT)
        print(f"  ({time.monotonic() - started:.0f} s, exit {code})", file=sys.stderr, flush=True)
        if code:
            failed.append(" ".join(cmd))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
