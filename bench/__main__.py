"""`python -m bench [--quick] [--only relay,consume,pipeline,websocket,connections,rebuild]`: run the scenarios one
after the other (never side by side: they would measure each other), then write
docs/benchmarks/results.json, results.md and the charts."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from .harness import RESULTS_DIR, Run, machine, write_results
from .report import write_report

SCENARIOS = ("relay", "consume", "pipeline", "websocket", "connections", "rebuild")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, few repeats")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args(argv)
    run = Run(quick=args.quick)
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")

    previous = RESULTS_DIR / ("results-quick.json" if run.quick else "results.json")
    HISTORY = RESULTS_DIR / "history.json"
    results = json.loads(previous.read_text()) if previous.exists() and set(chosen) != set(SCENARIOS) else {}
    results.update({"machine": machine(), "quick": run.quick, "generated": time.strftime("%Y-%m-%d %H:%M")})
    if HISTORY.exists():  # earlier figures, kept by hand with where they came from
        results["history"] = json.loads(HISTORY.read_text())
    for name in chosen:
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        results.update(importlib.import_module(f"bench.{name}").run(run))
        results.setdefault("durations_s", {})[name] = round(time.monotonic() - started, 1)
        # Per scenario: a rerun of one (--only) must not date, or credit to this Python,
        # the figures of the others.
        results.setdefault("measured", {})[name] = {"at": results["generated"], "python": results["machine"]["python"]}
        print(f"== {name} done in {results['durations_s'][name]} s", flush=True)
        write_results(results, quick=run.quick)  # keep what is done if a later one fails
    path = write_results(results, quick=run.quick)
    write_report(results, quick=run.quick)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
