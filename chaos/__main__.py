"""`python -m chaos [--orders N] [--rate R] [--seed S] [--quick]` (``make chaos``): a chaos
run on services mode, checked and reported in docs/chaos/ (a quick one in var/chaos/);
exits 1 if any invariant fails."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .report import QUICK_DIR, RESULTS_DIR, write
from .run import Plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--orders", type=int, help="orders offered (full: 10000, quick: 300)")
    parser.add_argument("--rate", type=float, help="orders per second (full: 4, quick: 3)")
    parser.add_argument("--seed", type=int, help="the fault schedule's and the orders' seed (default: a new one)")
    parser.add_argument("--quick", action="store_true", help="the small run: a few hundred orders, each fault once")
    args = parser.parse_args(argv)
    plan = Plan.of(quick=args.quick, orders=args.orders, rate=args.rate, seed=args.seed)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "waybill-chaos"
    results = run(plan, workdir=workdir, log=lambda line: print(line, flush=True))
    path = write(results, QUICK_DIR if plan.quick else RESULTS_DIR)
    print(f"results: {path}")
    for name, value in results["invariants"].items():
        print(f"  {name}: {value}{'' if value == 0 else '  <- FAILED'}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
