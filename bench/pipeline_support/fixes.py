"""Run a Waybill process with two of the fixes the benchmark report proposes, applied at
start-up, so their effect can be measured before anyone changes product code:

    python -m bench.pipeline_support.fixes -m uvicorn config.asgi:application ...
    python -m bench.pipeline_support.fixes /path/to/.venv/bin/celery -A config.celery:app worker ...

1. ``pooled-http``: ``httpx.post`` (what ``apps/orders/payments.py::_post`` calls, which
   builds a client, a connection pool and an SSL context, with the CA bundle loaded, on
   every call) becomes a call on one process-wide keep-alive ``httpx.Client``.
2. ``one-loop``: ``apps/readmodels/live.py`` publishes through ``async_to_sync``, which from
   a worker thread starts a new event loop per call, and channels_redis keeps its Redis
   connections per loop: a new connection (and redis-py's handshake, which re-reads the
   package metadata) per push. Here ``live.async_to_sync`` runs every publish on one
   long-lived event loop in a thread of its own, so the connections are reused.

Experiment only (``fix_experiment``): the product code is not touched. ``WAYBILL_BENCH_FIXES``
chooses (comma-separated, default both).
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import os
import runpy
import sys
import threading


def _pooled_http() -> None:
    import httpx

    client = httpx.Client()

    def post(url, **kwargs):
        return client.post(url, **kwargs)

    httpx.post = post


class _Loop:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="channel-layer-loop", daemon=True).start()

    def async_to_sync(self, function):
        def call(*args, **kwargs):
            return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self.loop).result()
        return call


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Patches ``apps.readmodels.live`` right after it is imported."""

    def __init__(self, module: str, patch):
        self.module, self.patch = module, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def install(fixes: set[str]) -> None:
    if "pooled-http" in fixes:
        _pooled_http()
    if "one-loop" in fixes:
        loop = _Loop()

        def patch(module):
            module.async_to_sync = loop.async_to_sync

        sys.meta_path.insert(0, _PatchAfterImport("apps.readmodels.live", patch))


def main() -> None:
    install(set(os.environ.get("WAYBILL_BENCH_FIXES", "pooled-http,one-loop").split(",")))
    argv = sys.argv[1:]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
