"""Before/after numbers for the fixes the report proposes, services mode, back to back
(an A/B pair is far less at the mercy of the shared machine than two
separate runs):

    PYTHONPATH=platform:. .venv/bin/python -m bench.pipeline_support.fix_experiment [--variants shipped,all]

Variants: ``shipped`` (as the benchmark runs it), ``conn`` (``?conn_max_age=60&
conn_health_checks=true`` on every database URL; since commit 89f0591 the settings set
CONN_MAX_AGE from WAYBILL_DB_CONN_MAX_AGE after reading the URL, 60 in workers and relays
and 0 in web processes, so this variant no longer changes anything: it mattered before,
when every consumed message opened a new connection), ``code`` (``fixes``: pooled payment
HTTP client and one event loop for live pushes, applied at start-up), ``all`` (both). Each: warm-up, three saturation
bursts of ``--burst`` orders, then ``--rate``/s for ``--seconds``; prints throughput,
latency and CPU per order per process. Not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time

from bench.harness import Run

from . import targets
from .load import Driver
from .sampler import ProcessSampler, cpu_delta

CONN_QUERY = "conn_max_age=60&conn_health_checks=true"


def _patched_stack_argv(original):
    def argv(process):
        command = original(process)
        if process.kind in ("web", "worker", "relay", "beat"):
            rest = command[1:] if command[0] == sys.executable else command
            return [sys.executable, "-m", "bench.pipeline_support.fixes", *rest]
        return command
    return staticmethod(argv)


async def _measure(deployed, sampler, *, burst: int, rate: float, seconds: float) -> dict:
    async with Driver(deployed.target) as driver:
        await driver.phase(rate=10, count=30, label="warm-up", drain_timeout=120)
        throughputs, cpu, confirmed = [], {}, 0
        for _ in range(3):
            before = sampler.cpu()
            res = await driver.phase(rate=1000, count=burst, label="burst", drain_timeout=300)
            for name, used in cpu_delta(before, sampler.cpu()).items():
                cpu[name] = cpu.get(name, 0.0) + used
            confirmed += res.summary()["confirmed"]
            throughputs.append(round(res.drain_throughput(), 1))
        steady = (await driver.phase(rate=rate, count=int(rate * seconds), label="steady",
                                     drain_timeout=300)).summary()
    per_order = {name: round(1000 * s / confirmed, 1) for name, s in sorted(cpu.items())}
    return {"orders_per_s": statistics.median(throughputs), "bursts": throughputs,
            "cpu_ms_per_order_total": round(sum(per_order.values()), 1), "cpu_ms_per_order": per_order,
            f"at_{rate:g}_per_s": {k: round(steady[k], 1) if isinstance(steady[k], float) else steady[k]
                                   for k in ("p50", "p95", "p99", "confirmed", "achieved_orders_per_s")}}


def main() -> None:
    from launcher import stack as stack_module
    from launcher.servers import PostgresServer

    from bench.pipeline import PRODUCTS

    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="shipped,all")
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    workdir = Run(quick=True).workdir / "fix-experiment"
    shutil.rmtree(workdir, ignore_errors=True)
    results = {}
    original_argv = stack_module.Stack.__dict__["argv"]  # the staticmethod itself
    for index, variant in enumerate(args.variants.split(",")):
        began = time.monotonic()
        folder = workdir / f"{index}-{variant}"
        code = variant in ("code", "all")
        query = CONN_QUERY if variant in ("conn", "all") else ""
        stack_module.Stack.argv = _patched_stack_argv(original_argv.__func__) if code else original_argv
        try:
            # A fresh PostgreSQL cluster per variant: provisioning keeps existing databases.
            with PostgresServer(folder / "postgres", fast=True,
                                settings={"max_connections": "400"}) as postgres, \
                    targets.services(folder / "services", postgres, PRODUCTS,
                                     database_url_query=query) as deployed:
                sampler = ProcessSampler(deployed.processes, trees=deployed.trees).start()
                try:
                    results[variant] = asyncio.run(_measure(deployed, sampler, burst=args.burst,
                                                            rate=args.rate, seconds=args.seconds))
                finally:
                    sampler.stop()
        finally:
            stack_module.Stack.argv = original_argv
        results[variant]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        results[variant]["seconds"] = round(time.monotonic() - began)
        print(variant, json.dumps(results[variant]), flush=True)
        results[f"{index}-{variant}"] = results.pop(variant)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
