"""Blue/green rebuilds in services mode: readmodels' projections rebuilt from the RabbitMQ
stream into a PostgreSQL schema of their own, by readmodels' own database role and broker
user, while the live projection keeps serving and orders keep coming. Killed with SIGKILL
halfway, the rebuild resumes where its last commit left it; switched, nothing live is lost
or applied twice; and a full rebuild equals the live read models row for row (invariant 6)
with no push and no message while it replays. Embedded: tests/kernel/test_rebuild.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from kombu import Connection, Exchange

from launcher.polling import wait_for
from launcher.stack import REPO

from .support import FLOW_TIMEOUT, client, place, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")

# The projections compared row for row: orders' and the catalog's. The operations gauges
# are rebuilt too, but reports keep arriving every few seconds, so no two reads agree.
COMPARED = {"readmodels_ordersummary": "order_id", "readmodels_catalogitem": "sku",
            "readmodels_orderstatuscount": "status", "readmodels_orderthroughput": "minute",
            "readmodels_saleline": "order_id, sku"}
ORDER_KINDS = ("order", "catalog_item", "stock_item")


def _env(deployment, **extra) -> dict[str, str]:
    env = deployment.stack.env(contexts=("readmodels",), broker="readmodels", service_name="readmodels-rebuild")
    return {**env, **extra}


def _rebuild(deployment, **extra) -> str:
    result = subprocess.run([sys.executable, "manage.py", "rebuild", "--no-progress"], cwd=REPO,
                            env=_env(deployment, **extra), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _rows(deployment) -> dict[str, list]:
    """The compared projections as readers see them, once the dashboard job has folded its
    counters; without wall-clock bookkeeping and surrogate ids."""
    url = deployment.stack.database_urls["readmodels"]
    wait_for(lambda: query(url, "SELECT count(*) FROM readmodels_dashboarddelta")[0][0] == 0, FLOW_TIMEOUT,
             "the dashboard job to fold the counters")
    rows = {}
    for table, key in COMPARED.items():
        columns = [name for (name,) in query(
            url, "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                 "AND table_name = %s AND column_name NOT IN ('updated_at', 'id') ORDER BY column_name", (table,))]
        rows[table] = query(url, f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}")
    return rows


def _rebuilds(deployment) -> list[tuple]:
    return query(deployment.stack.database_urls["readmodels"],
                 "SELECT id, status, done FROM readmodels_rebuild ORDER BY id")


def _cancel(api: httpx.Client, order_id: str) -> None:
    etag = api.get(f"/api/v1/orders/{order_id}/").headers["ETag"]
    response = api.post(f"/api/v1/orders/{order_id}/cancel/", headers={"If-Match": etag})
    assert response.status_code == 202, response.text


def _published_again(deployment, order_ids: list[str]) -> None:
    """Publish again the placed events of ``order_ids``, as a relay that crashed before its
    confirm does: every consumer and the history get them twice."""
    rows = query(deployment.stack.database_urls["orders"],
                 "SELECT envelope FROM orders_outboxmessage WHERE message_type = 'orders.order_placed' "
                 "AND aggregate_id = ANY(%s)", (order_ids,))
    with Connection(deployment.stack.broker_urls["admin"]) as connection:
        producer = connection.Producer()
        for (envelope,) in rows:
            producer.publish(json.dumps(envelope), exchange=Exchange("waybill.events", type="topic", passive=True),
                             routing_key=envelope["type"], content_type="application/json", content_encoding="utf-8")


def test_a_rebuild_killed_halfway_resumes_switches_under_live_traffic_and_equals_the_live_read_models(
        deployment, tokens):
    url = deployment.stack.database_urls["readmodels"]
    sku = product(deployment, tokens, on_hand=1000)
    before = place(deployment, tokens, sku, 30)
    wait_confirmed(deployment, before)
    with client(deployment, tokens, "alice") as alice:
        for order_id in before[:5]:
            _cancel(alice, order_id)
    _published_again(deployment, before[5:10])
    deployment.crash("readmodels-worker")  # a restart along the way
    wait_for(lambda: query(url, "SELECT count(*) FROM readmodels_ordersummary WHERE status = 'CANCELLED' "
                                "AND order_id = ANY(%s::uuid[])", (before[:5],))[0][0] == 5, FLOW_TIMEOUT,
             "the cancellations on the read side")

    # Killed halfway: one message per batch, so it is still replaying when it has committed one.
    process = subprocess.Popen([sys.executable, "manage.py", "rebuild", "--no-progress"], cwd=REPO,
                               env=_env(deployment, WAYBILL_HISTORY_BATCH="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def committed_some() -> int:
            rebuilds = [row for row in _rebuilds(deployment) if row[1] == "replaying"]
            if not rebuilds:
                return 0
            schema = f"readmodels_rebuild_{rebuilds[-1][0]}"
            found = query(url, "SELECT to_regclass(%s)", (f"{schema}.readmodels_replayposition",))[0][0]
            return found and query(url, f"SELECT applied FROM {schema}.readmodels_replayposition")
        wait_for(committed_some, FLOW_TIMEOUT, "the rebuild to commit a batch")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    (killed,) = [row for row in _rebuilds(deployment) if row[1] == "replaying"]

    # Resumed while orders keep coming.
    placing, during = threading.Event(), []

    def keep_placing() -> None:
        with client(deployment, tokens, "alice") as alice:
            while not placing.is_set() and len(during) < 200:
                response = alice.post("/api/v1/orders/", json={"lines": [{"sku": sku, "quantity": 1}]})
                assert response.status_code == 202, response.text
                during.append(response.json()["id"])

    placer = threading.Thread(target=keep_placing)
    placer.start()
    try:
        wait_for(lambda: len(during) >= 5, FLOW_TIMEOUT, "orders to flow")
        _rebuild(deployment)
        wait_for(lambda: len(during) >= 15, FLOW_TIMEOUT, "orders to flow after the switch")
    finally:
        placing.set()
        placer.join(timeout=60)
    resumed = [row for row in _rebuilds(deployment) if row[0] == killed[0]]
    assert resumed and resumed[0][1] == "switched", _rebuilds(deployment)

    # Nothing live lost or applied twice: every order of the traffic is confirmed, each
    # message once in its timeline, and one document version per message applied.
    wait_confirmed(deployment, before[5:] + during)
    for order_id, timeline, version in query(url, "SELECT order_id, timeline, version FROM readmodels_ordersummary "
                                                  "WHERE order_id = ANY(%s::uuid[])", (before + during,)):
        ids = [step["message_id"] for step in timeline]
        assert len(ids) == len(set(ids)) == version, (order_id, timeline)
        assert {"placed", "stock_reserved", "payment_charged", "confirmed"} <= {step["step"] for step in timeline}

    # Invariant 6: a full rebuild of this live state equals it, and pushed and sent nothing.
    live = _rows(deployment)
    changes = query(url, "SELECT count(*) FROM readmodels_change WHERE kind = ANY(%s)", (list(ORDER_KINDS),))
    streams = query(url, "SELECT name, position FROM readmodels_stream WHERE name NOT LIKE 'dashboard%%' ORDER BY name")
    sent = query(url, "SELECT count(*) FROM readmodels_outboxmessage WHERE message_type NOT LIKE 'waybill.%%'")
    _rebuild(deployment)
    assert _rows(deployment) == live
    assert query(url, "SELECT count(*) FROM readmodels_change WHERE kind = ANY(%s)", (list(ORDER_KINDS),)) == changes
    assert query(url, "SELECT name, position FROM readmodels_stream WHERE name NOT LIKE 'dashboard%%' "
                      "ORDER BY name") == streams
    assert query(url, "SELECT count(*) FROM readmodels_outboxmessage WHERE message_type NOT LIKE 'waybill.%%'") == sent

    # The replaced tables are kept in the rebuilds' schemas until dropped.
    assert "dropped schema readmodels_rebuild_" in subprocess.run(
        [sys.executable, "manage.py", "rebuild", "--drop-replaced"], cwd=REPO, env=_env(deployment),
        capture_output=True, text=True, timeout=120).stdout
    assert not query(url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'readmodels_rebuild_%%'")
