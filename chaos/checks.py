"""What the run proves at its end, read from the source of each truth: every context's
own database (psycopg, with that context's own role, as tests/services/support.py does),
the payment sandbox's own records, the broker's management API, the read side's rebuild,
the WebSocket clients and the webhook receiver. Each check returns its count of
violations (0 is the invariant) and a few examples, so a failure names orders.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import httpx
import psycopg

from launcher.stack import REPO

from .load import FINAL, Placed
from .topology import Topology
from .webhooks import ORDER_EVENTS, Receiver

EXAMPLES = 5
TERMINAL_SAGAS = ("completed", "compensated")
# The read side's projections compared with their rebuild (as tests/services/test_rebuild_live.py):
# the operations gauges are rebuilt too, but reports keep arriving, so no two reads agree.
COMPARED = {"readmodels_ordersummary": "order_id", "readmodels_catalogitem": "sku",
            "readmodels_orderstatuscount": "status", "readmodels_orderthroughput": "minute",
            "readmodels_saleline": "order_id, sku"}


def query(url: str, sql: str, params=()) -> list[tuple]:
    """Rows of ``sql`` on the database at ``url`` (none for a statement without rows)."""
    with psycopg.connect(url, connect_timeout=10) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _found(items) -> dict:
    items = list(items)
    return {"count": len(items), "examples": items[:EXAMPLES]}


def wait_until(condition, timeout: float, interval: float = 0.5):
    """``condition()`` until it is truthy or ``timeout`` s pass; its last value. A database
    restarting meanwhile only means asking again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except psycopg.Error:
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- orders: lost, duplicated, sagas -----------------------------------------------------------
def orders_of(topology: Topology, customer_ids: list[int]) -> dict[str, dict]:
    """Every order of the run's customers in orders' database: id -> status, key, lines."""
    url = topology.stack.database_urls["orders"]
    rows = query(url, "SELECT o.id::text, o.status, o.customer_id, o.idempotency_key, "
                      "coalesce(json_agg(json_build_object('sku', l.sku, 'quantity', l.quantity)) "
                      "FILTER (WHERE l.id IS NOT NULL), '[]') "
                      "FROM orders_order o LEFT JOIN orders_orderline l ON l.order_id = o.id "
                      "WHERE o.customer_id = ANY(%s) GROUP BY o.id", (customer_ids,))
    return {oid: {"status": status, "customer_id": customer, "key": key, "lines": lines}
            for oid, status, customer, key, lines in rows}


def sagas_settle(topology: Topology, order_ids: list[str], deadline: float) -> dict:
    """Wait (until the wall-clock ``deadline``) for every saga of ``order_ids`` to end; the
    ones that did not, and when the last one did."""
    url = topology.stack.database_urls["orders"]

    def open_sagas() -> list[tuple]:
        return query(url, "SELECT order_id::text, state, step FROM orders_ordersaga "
                          "WHERE order_id = ANY(%s::uuid[]) AND state <> ALL(%s)", (order_ids, list(TERMINAL_SAGAS)))

    remaining = wait_until(lambda: not open_sagas() and "settled", max(0.0, deadline - time.time()), interval=1.0)
    left = [] if remaining else open_sagas()
    last = query(url, "SELECT extract(epoch FROM max(updated_at))::float8 FROM orders_ordersaga "
                      "WHERE order_id = ANY(%s::uuid[])", (order_ids,))[0][0]
    missing = set(order_ids) - {oid for (oid,) in query(
        url, "SELECT order_id::text FROM orders_ordersaga WHERE order_id = ANY(%s::uuid[])", (order_ids,))}
    return {"not_terminal": _found(left + [(oid, "no saga", "") for oid in sorted(missing)]),
            "last_saga_change": last}


def lost_and_duplicated(placed: list[Placed], orders: dict[str, dict], replay_differs: list[str]) -> dict:
    accepted = {p.order_id: p for p in placed if p.accepted}
    ours = {(p.key): p for p in placed}
    lost = [oid for oid in accepted if oid not in orders or orders[oid]["status"] not in FINAL]
    answered_twice = [(p.key, sorted(p.ids_answered)) for p in placed if len(p.ids_answered) > 1]
    # An order the run's customers have that no request of the run answered with: a second
    # order for one key, or one placed with a key the run never sent.
    extra = [(oid, o["key"]) for oid, o in orders.items() if oid not in accepted
             and (o["key"] not in ours or ours[o["key"]].accepted)]
    # Placed by a request whose every answer was lost (the client gave up): not lost, not
    # duplicated, but it exists and is checked like the others.
    unanswered = [oid for oid, o in orders.items() if oid not in accepted and o["key"] in ours
                  and not ours[o["key"]].accepted]
    wrong_lines = [oid for oid, p in accepted.items() if oid in orders and sorted(
        (line["sku"], line["quantity"]) for line in orders[oid]["lines"]) != sorted(
        (line["sku"], line["quantity"]) for line in p.lines)]
    duplicated = answered_twice + extra + [(key, "answered otherwise when sent again") for key in replay_differs]
    return {"lost": _found(lost), "duplicated": _found(duplicated),
            "lines_not_as_ordered": _found(wrong_lines), "placed_without_an_answer": len(unanswered)}


# --- money ---------------------------------------------------------------------------------------
def sandbox_charges(topology: Topology) -> dict[str, list[dict]]:
    """The payment provider's own record (its SQLite file, read only): reference -> charges."""
    path = topology.stack.workdir / "var" / "payment-sandbox" / "payments.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute("SELECT c.reference, c.status, c.amount_cents, r.status FROM charges c "
                          "LEFT JOIN refunds r ON r.id = c.refund_id").fetchall()
    charges: dict[str, list[dict]] = defaultdict(list)
    for reference, status, cents, refund in rows:
        charges[reference].append({"status": status, "cents": cents, "refunded": refund == "refunded"})
    return charges


def double_effects(topology: Topology, orders: dict[str, dict]) -> dict:
    """No order charged twice, none reserved or released twice, and the money where each
    order's outcome says: a confirmed order charged once and kept, a cancelled or rejected
    one given back whatever it was charged."""
    charges = sandbox_charges(topology)
    stats = httpx.get(f"{topology.deployment.payment_sandbox_url}/_sandbox/stats", timeout=10).json()
    charged_twice, unpaid_confirmed, kept_money, refunded_confirmed = [], [], [], []
    refunds_for_cancels = cancelled_and_charged = 0
    for oid, order in orders.items():
        succeeded = [c for c in charges.get(oid, []) if c["status"] == "succeeded"]
        if len(succeeded) > 1:
            charged_twice.append(oid)
        kept = [c for c in succeeded if not c["refunded"]]
        if order["status"] == "CONFIRMED":
            if not succeeded:
                unpaid_confirmed.append(oid)
            if len(kept) != len(succeeded):
                refunded_confirmed.append(oid)
        elif kept:  # CANCELLED or REJECTED: nothing may stay charged
            kept_money.append((oid, order["status"]))
        if order["status"] == "CANCELLED" and succeeded:
            cancelled_and_charged += 1
            refunds_for_cancels += sum(c["refunded"] for c in succeeded)

    orders_url = topology.stack.database_urls["orders"]
    ids = list(orders)
    charged_events = query(orders_url, "SELECT aggregate_id, count(*) FROM orders_outboxmessage "
                                       "WHERE message_type = 'orders.payment_charged' AND aggregate_id = ANY(%s) "
                                       "GROUP BY aggregate_id HAVING count(*) > 1", (ids,))
    inventory_url = topology.stack.database_urls["inventory"]
    ledger_twice = query(inventory_url, "SELECT order_id::text, sku, kind, count(*) FROM inventory_stockentry "
                                        "WHERE order_id = ANY(%s::uuid[]) AND kind IN ('reserved', 'released') "
                                        "GROUP BY order_id, sku, kind HAVING count(*) > 1", (ids,))
    effects = {
        "charged_twice": _found(charged_twice),
        "payment_charged_recorded_twice": _found(charged_events),
        "stock_entry_twice": _found(ledger_twice),
        "confirmed_without_a_charge": _found(unpaid_confirmed),
        "confirmed_but_refunded": _found(refunded_confirmed),
        "not_confirmed_but_charged": _found(kept_money),
    }
    return {"count": sum(v["count"] for v in effects.values()), **effects,
            "cancelled_orders_charged": cancelled_and_charged, "refunds_of_cancelled_orders": refunds_for_cancels,
            "sandbox_stats": stats}


# --- stock -----------------------------------------------------------------------------------------
def stock(topology: Topology, orders: dict[str, dict], initial: dict[str, int]) -> dict:
    """Per product: never more confirmed than there was, on hand as it began (nobody
    adjusts it during the run), reserved equal to what the confirmed orders hold, the
    ledger's fold equal to the row; each order's reservation as its outcome says."""
    url = topology.stack.database_urls["inventory"]
    products = {sku: (on_hand, reserved) for sku, on_hand, reserved in query(
        url, "SELECT sku, on_hand, reserved FROM inventory_product WHERE sku = ANY(%s)", (list(initial),))}
    folded = {sku: (on_hand, reserved) for sku, on_hand, reserved in query(
        url, "SELECT sku, sum(on_hand_delta)::int, sum(reserved_delta)::int FROM inventory_stockentry "
             "WHERE sku = ANY(%s) GROUP BY sku", (list(initial),))}
    confirmed: Counter[str] = Counter()
    for order in orders.values():
        if order["status"] == "CONFIRMED":
            for line in order["lines"]:
                confirmed[line["sku"]] += line["quantity"]
    oversold, mismatched, per_product = 0, [], {}
    for sku, start in initial.items():
        on_hand, reserved = products.get(sku, (None, None))
        oversold += max(0, confirmed[sku] - start) + max(0, (reserved or 0) - (on_hand or 0))
        if on_hand != start or reserved != confirmed[sku] or folded.get(sku) != (on_hand, reserved):
            mismatched.append({"sku": sku, "on_hand_at_start": start, "on_hand": on_hand, "reserved": reserved,
                               "confirmed_units": confirmed[sku], "ledger_fold": folded.get(sku)})
        per_product[sku] = {"on_hand": on_hand, "reserved": reserved, "confirmed_units": confirmed[sku],
                            "sold_out": reserved == on_hand}
    rows = query(url, "SELECT order_id::text, status, reason FROM inventory_reservation "
                      "WHERE order_id = ANY(%s::uuid[])", (list(orders),))
    reservations = {order_id: status for order_id, status, _ in rows}
    wrong = [(oid, o["status"], reservations.get(oid)) for oid, o in orders.items()
             if (o["status"] == "CONFIRMED") != (reservations.get(oid) == "reserved")]
    # Refusals for short stock (inventory words them "Not enough stock for ..."; an unknown SKU
    # is refused too, in other words) show the run raced for the last units, which is what
    # makes "oversold" mean something.
    refused = sum(1 for _, status, reason in rows if status == "rejected" and reason.startswith("Not enough stock"))
    return {"oversold": oversold, "mismatches": _found(mismatched + [{"order": w} for w in wrong]),
            "products": per_product, "refused_for_stock": refused}


# --- the read side ---------------------------------------------------------------------------------
def read_model_agrees(topology: Topology, orders: dict[str, dict], timeout: float = 120.0) -> dict:
    """Every order's read-model status equals orders' own, once the read side has had
    ``timeout`` s to catch up: it follows orders' events, so when the sagas have settled in
    orders its queue may still hold a backlog (the small run in CI found it 76 orders
    behind, still applying). Checked before the rebuild is compared with the live rows."""
    url = topology.stack.database_urls["readmodels"]

    def differences() -> list:
        read = dict(query(url, "SELECT order_id::text, status FROM readmodels_ordersummary "
                               "WHERE order_id = ANY(%s::uuid[])", (list(orders),)))
        return [(oid, o["status"], read.get(oid)) for oid, o in orders.items() if read.get(oid) != o["status"]]

    agreed = wait_until(lambda: not differences() and "agreed", timeout)
    return _found([] if agreed else differences())


def _projections(url: str) -> dict[str, list]:
    rows = {}
    for table, key in COMPARED.items():
        columns = [name for (name,) in query(
            url, "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                 "AND table_name = %s AND column_name NOT IN ('updated_at', 'id') ORDER BY column_name", (table,))]
        rows[table] = query(url, f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}")  # noqa: S608 - our names
    return rows


def rebuild_equals_live(topology: Topology, timeout: float = 600.0) -> dict:
    """``manage.py rebuild`` of readmodels from the event history, by readmodels' own role
    and broker user; the rebuilt projections must equal the live ones row for row."""
    url = topology.stack.database_urls["readmodels"]

    def folded() -> None:
        # The dashboard's counters are folded by a periodic job: compare them once it has.
        wait_until(lambda: query(url, "SELECT count(*) FROM readmodels_dashboarddelta")[0][0] == 0, 60)

    folded()
    live = _projections(url)
    env = topology.stack.env(contexts=("readmodels",), broker="readmodels", service_name="readmodels-rebuild")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "manage.py", "rebuild", "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    seconds = round(time.monotonic() - began, 1)
    if done.returncode != 0:
        return {"count": 1, "examples": [f"rebuild failed: {done.stdout[-1500:]} {done.stderr[-3000:]}"],
                "seconds": seconds}
    folded()
    rebuilt = _projections(url)
    differing = []
    for table in COMPARED:
        if rebuilt[table] != live[table]:
            # As text: a row may hold JSON (lists, objects), which a set cannot hold.
            live_rows = {json.dumps(row, default=str) for row in live[table]}
            rebuilt_rows = {json.dumps(row, default=str) for row in rebuilt[table]}
            only_live, only_rebuilt = live_rows - rebuilt_rows, rebuilt_rows - live_rows
            differing.append({"table": table, "live_only": [str(r)[:300] for r in list(only_live)[:2]],
                              "rebuilt_only": [str(r)[:300] for r in list(only_rebuilt)[:2]],
                              "rows": len(live[table]) - len(rebuilt[table])})
    return {**_found(differing), "seconds": seconds, "rows": {t: len(r) for t, r in live.items()}}


def sockets_converged(topology: Topology, population, customers: list, timeout: float = 60.0) -> dict:
    """Every WebSocket client's last document of every order of its customer (status and
    version) equals the read model's, once it has had ``timeout`` s to catch up."""
    url = topology.stack.database_urls["readmodels"]

    def differences() -> list:
        read = query(url, "SELECT order_id::text, customer_id, version, status FROM readmodels_ordersummary "
                          "WHERE customer_id = ANY(%s)", ([c.user_id for c in customers],))
        by_customer: dict[int, dict[str, tuple[int, str]]] = defaultdict(dict)
        for oid, customer_id, version, status in read:
            by_customer[customer_id][oid] = (version, status)
        wrong = []
        for client in population.clients:
            expected = by_customer.get(customers[client.customer].user_id, {})
            for oid, document in expected.items():
                seen = client.documents.get(oid)
                if seen != document:
                    wrong.append({"client": client.index, "order": oid, "read_model": document, "client_has": seen,
                                  "connected": client.connected})
        return wrong

    converged = wait_until(lambda: not differences() and "converged", timeout)
    wrong = [] if converged else differences()
    return {"count": len({w["client"] for w in wrong}), "documents": len(wrong), "examples": wrong[:EXAMPLES]}


def webhooks_delivered(topology: Topology, receiver: Receiver, since: float, timeout: float = 120.0) -> dict:
    """Every order event published since the endpoint was receiving reached the receiver at
    least once, each under one delivery id (so a receiver deduplicates on it), signed."""
    url = topology.stack.database_urls["orders"]
    expected = {str(mid): kind for mid, kind in query(
        url, "SELECT (envelope->>'id'), message_type FROM orders_outboxmessage "
             "WHERE message_type = ANY(%s) AND created_at >= to_timestamp(%s)", (list(ORDER_EVENTS), since))}

    def missing() -> set[str]:
        return set(expected) - {d.event_id for d in receiver.snapshot()}

    wait_until(lambda: not missing(), timeout, interval=1.0)
    received = receiver.snapshot()
    ids_per_event: dict[str, set[str]] = defaultdict(set)
    events_per_id: dict[str, set[str]] = defaultdict(set)
    for d in received:
        ids_per_event[d.event_id].add(d.delivery_id)
        events_per_id[d.delivery_id].add(d.event_id)
    not_deduplicable = [e for e, ids in ids_per_event.items() if len(ids) > 1] + \
        [i for i, events in events_per_id.items() if len(events) > 1]
    unsigned = [d.delivery_id for d in received if not d.signed]
    lost = sorted(missing())
    return {"count": len(lost) + len(not_deduplicable) + len(unsigned), "missing": _found(lost),
            "not_deduplicable": _found(not_deduplicable), "unsigned": _found(unsigned),
            "events": len(expected), "requests": len(received),
            "redelivered_requests": len(received) - len(ids_per_event)}


# --- figures: the broker's redeliveries, dead letters --------------------------------------------
class BrokerFigures:
    """The management API's per-queue redelivery counts, sampled every ``interval`` s on a
    thread, from the first node of ``management_urls`` that answers (any node answers for
    the cluster). The counters start again from 0 when a node restarts (or a queue's
    leader moves), so the run adds up the rises between samples (what was counted after
    the last sample before a kill is not seen: the figure is a lower bound)."""

    def __init__(self, management_urls: list[str], vhost: str = "waybill", interval: float = 2.0):
        self.nodes = []
        for url in filter(None, management_urls):
            parts = urlsplit(url)
            self.nodes.append((f"{parts.scheme}://{parts.hostname}:{parts.port}",
                               (parts.username or "", parts.password or "")))
        self.vhost, self.interval = vhost, interval
        self.redelivered = 0
        self.dead_queue = 0
        self.unanswered = 0  # samples no node answered
        self._last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-broker-figures", daemon=True)

    def _queues(self) -> list | None:
        for base, auth in self.nodes:
            try:
                queues = httpx.get(f"{base}/api/queues/{self.vhost}", auth=auth, timeout=5,
                                   params={"columns": "name,messages,message_stats.redeliver"}).json()
            except (httpx.HTTPError, ValueError):
                continue  # that node is down: ask the next
            if isinstance(queues, list):
                return queues
        return None

    def sample(self) -> None:
        queues = self._queues()
        if queues is None:
            self.unanswered += 1
            return
        for queue in queues:
            count = (queue.get("message_stats") or {}).get("redeliver", 0)
            before = self._last.get(queue["name"], 0)
            self.redelivered += count - before if count >= before else count  # restarted from 0
            self._last[queue["name"]] = count
            if queue["name"] == "waybill.dead":
                self.dead_queue = queue.get("messages") or 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> BrokerFigures:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()


def dead_letters(topology: Topology) -> dict[str, int]:
    """Rows of every dead-letter table, per context database."""
    counts = {}
    for alias, url in topology.stack.database_urls.items():
        if alias == "default":
            continue
        for (table,) in query(url, "SELECT table_name FROM information_schema.tables WHERE "
                                   "table_schema = current_schema() AND table_name LIKE '%%deadletter'"):
            counts[table] = query(url, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 - names from the catalog
    return counts


def inbox_retries(topology: Topology) -> int:
    """Messages a consumer had to try more than once (a handler failed, e.g. the provider)."""
    total = 0
    for alias, url in topology.stack.database_urls.items():
        if alias == "default":
            continue
        for (table,) in query(url, "SELECT table_name FROM information_schema.tables WHERE "
                                   "table_schema = current_schema() AND table_name LIKE '%%inboxmessage'"):
            total += query(url, f"SELECT coalesce(sum(attempts - 1), 0)::int FROM {table} "  # noqa: S608
                                "WHERE attempts > 1")[0][0]
    return total


def customer_ids(topology: Topology, usernames: list[str]) -> dict[str, int]:
    return dict(query(topology.stack.database_urls["default"],
                      "SELECT username, id FROM auth_user WHERE username = ANY(%s)", (usernames,)))
