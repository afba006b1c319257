"""Where the pipeline's CPU goes: run one system under a fixed load with its processes
under cProfile (every thread, see ``profiled``), then print each one's top functions.

    PYTHONPATH=platform:. .venv/bin/python -m bench.pipeline_support.profile_run services [--rate 5] [--seconds 30]
    PYTHONPATH=platform:. .venv/bin/python -m bench.pipeline_support.profile_run embedded
    ... services --database-url-query 'conn_max_age=60&conn_health_checks=true'   # a configuration experiment

Not part of ``python -m bench``: a diagnosis tool. The .prof files stay in
``$TMPDIR/waybill-bench/profile/<mode>/`` for ``python -m pstats`` or snakeviz.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import REPO, Run

from . import targets
from .load import Driver
from .sampler import ProcessSampler, cpu_delta

SERVICES_PROFILED = ("orders-web", "orders-worker", "orders-payments-worker", "inventory-worker",
                     "readmodels-worker", "readmodels-web", "orders-relay", "inventory-relay")


def _profile_services_process(deployment, name: str, outdir: Path) -> None:
    """Replace a running process of the deployment by the same command under the profiler."""
    deployment.kill(name, signal.SIGTERM)
    argv = deployment.stack.argv(deployment.specs[name])
    rest = argv[1:] if argv[0] == sys.executable else argv  # a console script (celery) runs as a path
    deployment.start_process(name, argv=[sys.executable, "-m", "bench.pipeline_support.profiled",
                                         str(outdir / f"{name}.prof"), *rest])
    if name in deployment.port_of:
        deployment.wait_ready(name)


def _report(path: Path, *, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)  # approximate across threads (see profiled)
    return out.getvalue()


async def _load(target, rate: float, seconds: float, sampler: ProcessSampler) -> dict:
    async with Driver(target) as driver:
        await driver.phase(rate=rate, count=int(rate * 3), label="warm-up", drain_timeout=60)
        before = sampler.cpu()
        res = await driver.phase(rate=rate, count=int(rate * seconds), label="profiled", drain_timeout=120)
        used = cpu_delta(before, sampler.cpu())
    summary = res.summary()
    confirmed = max(summary["confirmed"], 1)
    return {"summary": {k: summary[k] for k in ("p50", "p99", "confirmed", "offered", "achieved_orders_per_s")},
            "cpu_ms_per_order": {name: round(1000 * s / confirmed, 1) for name, s in sorted(used.items())}}


def main() -> None:
    from launcher.servers import PostgresServer

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["services", "embedded"])
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="only the CPU accounting")
    parser.add_argument("--database-url-query", default="",
                        help="appended to every database URL, e.g. conn_max_age=60&conn_health_checks=true")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra variable for every Waybill process")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    run = Run(quick=True)
    workdir = run.workdir / "profile" / args.mode
    shutil.rmtree(workdir, ignore_errors=True)
    outdir = workdir / "prof"
    outdir.mkdir(parents=True)
    from bench.pipeline import PRODUCTS

    profiles: list[Path] = []
    if args.mode == "services":
        with PostgresServer(workdir / "postgres", fast=True, settings={"max_connections": "400"}) as postgres, \
                targets.services(workdir / "services", postgres, PRODUCTS, extra_env=extra_env,
                                 database_url_query=args.database_url_query) as deployed:
            deployment_processes = dict(deployed.processes)
            if not args.no_profile:
                deployment = _deployment_of(deployed)
                for name in SERVICES_PROFILED:
                    _profile_services_process(deployment, name, outdir)
                    deployment_processes[name] = (deployment.specs[name].kind, deployment.running[name].pid)
                    profiles.append(outdir / f"{name}.prof")
            sampler = ProcessSampler(deployment_processes, trees=deployed.trees).start()
            result = asyncio.run(_load(deployed.target, args.rate, args.seconds, sampler))
            sampler.stop()
    else:
        env = {} if args.no_profile else {"_WAYBILL_BENCH_PROFILE": str(outdir / "platform.prof")}
        with _embedded_profiled(workdir, PRODUCTS, env, extra_env, args.database_url_query) as deployed:
            sampler = ProcessSampler(deployed.processes).start()
            result = asyncio.run(_load(deployed.target, args.rate, args.seconds, sampler))
            sampler.stop()
        if not args.no_profile:
            profiles.append(outdir / "platform.prof")
    print(result)
    for path in profiles:
        if path.exists():
            print(f"\n======== {path.stem} ========\n{_report(path, top=args.top)}")
        else:
            print(f"\n======== {path.stem}: no profile written ========")


def _deployment_of(deployed):
    return deployed.notes["deployment"]


def _embedded_profiled(workdir: Path, products, env: dict, extra_env: dict, database_url_query: str):
    """Embedded, with runplatform itself under the profiler when ``env`` names a file."""
    import contextlib

    harness = targets.e2e_harness()

    @contextlib.contextmanager
    def manage():
        profile_to = env.get("_WAYBILL_BENCH_PROFILE")
        if profile_to:
            original = harness.Platform.start

            def start(self, **kwargs):
                # Same as Platform.start, with the command wrapped by the profiler.
                self.port = harness.free_port()
                with self.log_path.open("ab") as log:
                    self.proc = subprocess.Popen(
                        [harness.PYTHON, "-m", "bench.pipeline_support.profiled", profile_to, str(harness.MANAGE),
                         "runplatform", "--host", "127.0.0.1", "--port", str(self.port)],
                        cwd=harness.REPO_DIR, env={**harness.subprocess_env(self.data_dir, kwargs.get("env")),
                                                   "PYTHONPATH": f"{REPO / 'platform'}:{REPO}"},
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                self.wait_ready()
                return self

            harness.Platform.start = start
            try:
                with targets.embedded(workdir / "embedded", products, extra_env=extra_env,
                                      database_url_query=database_url_query) as deployed:
                    yield deployed
            finally:
                harness.Platform.start = original
        else:
            with targets.embedded(workdir / "embedded", products, extra_env=extra_env,
                                  database_url_query=database_url_query) as deployed:
                yield deployed

    return manage()


if __name__ == "__main__":
    began = time.monotonic()
    main()
    print(f"done in {time.monotonic() - began:.0f} s")
