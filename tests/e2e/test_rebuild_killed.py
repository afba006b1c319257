"""A blue/green rebuild of the embedded platform's read models, from outside: started as the
admin's button starts it (a process of its own), killed with SIGKILL once it has committed
a batch, resumed by ``manage.py rebuild`` while orders keep coming; then nothing live is
lost, and a full rebuild equals the live read models row for row (invariant 6, embedded).
Services mode: tests/services/test_rebuild_live.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from .harness import MANAGE, PYTHON, REPO_DIR, SETTLE_TIMEOUT, Shop, manage, subprocess_env, wait_for

pytestmark = pytest.mark.e2e

COMPARED = {"readmodels_ordersummary": "order_id", "readmodels_catalogitem": "sku",
            "readmodels_orderstatuscount": "status", "readmodels_orderthroughput": "minute",
            "readmodels_saleline": "order_id, sku"}


def _read(data_dir: Path, sql: str, *, database: str = "readmodels.sqlite3") -> list[tuple]:
    with sqlite3.connect(f"file:{data_dir / database}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute(sql).fetchall()


def _rows(data_dir: Path) -> dict[str, list]:
    wait_for(lambda: _read(data_dir, "SELECT count(*) FROM readmodels_dashboarddelta")[0][0] == 0, SETTLE_TIMEOUT,
             "the dashboard job to fold the counters")
    rows = {}
    for table, key in COMPARED.items():
        columns = [name for _, name, *_ in _read(data_dir, f"PRAGMA table_info({table})")
                   if name not in ("updated_at", "id")]
        rows[table] = _read(data_dir, f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}")
    return rows


def _status(data_dir: Path) -> list[tuple]:
    return _read(data_dir, "SELECT id, status FROM readmodels_rebuild ORDER BY id")


def test_an_embedded_rebuild_killed_halfway_resumes_under_traffic_and_equals_the_live_read_models(platform_factory):
    platform = platform_factory("rebuild")
    data_dir = platform.data_dir
    shop = Shop(platform)
    sku = shop.create_product(on_hand=500)
    before = [shop.order(shop.alice, {sku: 1}) for _ in range(15)]
    for order_id in before:
        shop.wait_summary(shop.alice, order_id, "CONFIRMED")

    # As the admin's button does (waybill.rebuild.start_detached), one message per batch so
    # that it is still replaying when it has committed one.
    started = subprocess.run(
        [PYTHON, str(MANAGE), "shell", "-c",
         "from waybill import contexts, rebuild; print(rebuild.start_detached(contexts.get('readmodels')).pid)"],
        cwd=REPO_DIR, env=subprocess_env(data_dir, {"WAYBILL_HISTORY_BATCH": "1"}), capture_output=True, text=True,
        timeout=120, check=True)
    pid = int(started.stdout.split()[-1])
    green = data_dir / "readmodels.rebuild-1.sqlite3"

    def committed_some() -> bool:
        try:
            return bool(_read(data_dir, "SELECT applied FROM readmodels_replayposition", database=green.name))
        except sqlite3.Error:
            return False  # not there yet, or not migrated yet

    try:
        wait_for(committed_some, SETTLE_TIMEOUT * 3, "the rebuild to commit a batch")
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
             .lower(), SETTLE_TIMEOUT, "the killed rebuild to be gone")
    assert _status(data_dir) == [(1, "replaying")]

    placing, during = threading.Event(), []

    def keep_placing() -> None:
        client = shop.client("bob")
        while not placing.is_set() and len(during) < 100:
            during.append(shop.order(client, {sku: 1}))

    placer = threading.Thread(target=keep_placing)
    placer.start()
    try:
        wait_for(lambda: len(during) >= 3, SETTLE_TIMEOUT, "orders to flow")
        manage(data_dir, "rebuild", "--no-progress")
        wait_for(lambda: len(during) >= 8, SETTLE_TIMEOUT, "orders to flow after the switch")
    finally:
        placing.set()
        placer.join(timeout=60)
    assert _status(data_dir) == [(1, "switched")]
    for order_id in before:
        shop.wait_summary(shop.alice, order_id, "CONFIRMED")
    for order_id in during:
        summary = shop.wait_summary(shop.client("bob"), order_id, "CONFIRMED")
        steps = [(step["step"], step["at"]) for step in summary["timeline"]]
        assert len(steps) == len(set(steps)) == 4, summary  # placed, reserved, charged, confirmed: each once

    live = _rows(data_dir)
    manage(data_dir, "rebuild", "--no-progress")
    assert _status(data_dir) == [(1, "switched"), (2, "switched")]
    assert _rows(data_dir) == live
    assert "dropped file" in manage(data_dir, "rebuild", "--drop-replaced").stdout
    assert not green.exists()
