"""The operations console in the services deployment, where the shell (``shell-web``) has
no database of its own for messages: it reads every context's outbox, inbox and dead
letters through that context's own role, and the queues' figures from RabbitMQ's
management API, whose admin credentials it alone holds. Beside it, every process serves
its Prometheus metrics on an address of its own (``WAYBILL_METRICS_ADDR``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from launcher.deployment import CONTEXTS, DATABASES, MANAGEMENT_VARIABLE, METRICS_VARIABLE, database_variable
from launcher.polling import wait_for

from .support import FLOW_TIMEOUT, client, consumers, metric, place, product, query, wait_confirmed

pytestmark = pytest.mark.xdist_group("services")

CONSOLE = "/admin/waybill/console"
# The management API refreshes its figures every 5 s (collect_statistics_interval).
FIGURES_TIMEOUT = 30.0


class _Rows(HTMLParser):
    """The ``<tr>`` rows of class ``wanted``: each row's attributes and its cells' text, a
    line for each ``<br>`` or ``<div>`` in a cell."""

    def __init__(self, wanted: str):
        super().__init__()
        self.wanted = wanted
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self._cells: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        if tag == "tr":
            self._cells = [] if self.wanted in attrs.get("class", "").split() else None
            if self._cells is not None:
                self.rows.append((attrs, self._cells))
        elif self._cells is not None and tag == "td":
            self._cells.append("")
        elif self._cells and tag in ("br", "div"):
            self._cells[-1] += "\n"

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cells = None

    def handle_data(self, data):
        if self._cells:
            self._cells[-1] += data


def rows(page: str, wanted: str) -> list[tuple[dict[str, str], list[str]]]:
    parser = _Rows(wanted)
    parser.feed(page)
    return parser.rows


def env_of(deployment, name: str) -> dict[str, str]:
    """The environment the launcher gives process ``name`` (launcher.stack)."""
    return deployment.stack.process_env(deployment.specs[name])


@pytest.fixture(scope="module")
def console(deployment):
    """The staff user ``admin``, signed in through the gateway's login form (a session, as
    an operator's browser has), reading the console's pages."""
    cookie = deployment.session_cookie("admin")
    with httpx.Client(base_url=deployment.base_url, headers={"Cookie": cookie}, timeout=30) as browser:
        def page(path: str, **params) -> str:
            response = browser.get(f"{CONSOLE}/{path}", params=params)
            assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
            return response.text
        yield page


def test_the_consumers_page_has_the_brokers_figures_from_the_management_api(deployment, console):
    def disagreements() -> list[str]:
        found = [attrs for attrs, _ in rows(console("consumers/"), "consumer")]
        assert found, "the consumers page lists no queue"
        wrong = []
        for queue in found:
            name = queue["data-queue"]
            if queue["data-source"] != "management API" or queue["data-error"]:
                wrong.append(f"{name}: from {queue['data-source']!r}, error {queue['data-error']!r}")
            elif not (queue["data-ready"].isdigit() and queue["data-unacked"].isdigit()):
                wrong.append(f"{name}: ready {queue['data-ready']!r}, unacked {queue['data-unacked']!r}")
            elif (shown := int(queue["data-consumers"])) != (broker := consumers(deployment, name)) or not broker:
                wrong.append(f"{name}: {shown} consumers shown, the broker counts {broker}")
        return wrong

    # Equal once the API's statistics are fresh: a worker's consumers attach at its start.
    wait_for(lambda: not disagreements(), FIGURES_TIMEOUT, "the console's queue figures to be the broker's",
             describe=lambda: "\n".join(disagreements()))


def test_one_order_in_the_flow_across_every_contexts_database_and_in_the_metrics(deployment, tokens, console):
    # One of each kind of process: a worker counts what it consumed, a relay what it published.
    consuming = env_of(deployment, "inventory-worker")[METRICS_VARIABLE]
    publishing = env_of(deployment, "orders-relay")[METRICS_VARIABLE]
    # The orders worker's backstop may publish a row the relay has not claimed yet.
    backstop = env_of(deployment, "orders-worker")[METRICS_VARIABLE]
    assert len({consuming, publishing, backstop}) == 3
    consumed_before = metric(consuming, "waybill_messages_consumed_total", consumer="inventory")
    published_before = sum(metric(address, "waybill_messages_published_total", context="orders")
                           for address in (publishing, backstop))

    sku = product(deployment, tokens, on_hand=5)
    [order_id] = place(deployment, tokens, sku, 1)
    wait_confirmed(deployment, [order_id])
    with client(deployment, tokens, "alice") as alice:
        assert alice.get(f"/api/v1/orders/{order_id}/").json()["status"] == "CONFIRMED"

    hops = [(attrs["data-type"], cells) for attrs, cells in rows(console("flow/", q=order_id), "hop-row")]
    produced_by = {cells[2].split()[0] for _, cells in hops}
    applied_by = {consumer for _, cells in hops
                  for consumer, status in re.findall(r"^\s*([\w-]+): (\w+)", cells[7], re.MULTILINE)
                  if status == "processed"}
    described = "\n".join(f"{kind}: {' | '.join(' '.join(c.split()) for c in cells)}" for kind, cells in hops)
    # Each of these came out of another database: orders' and inventory's outboxes, and the
    # inboxes of inventory, orders, payments (orders' bulkhead) and readmodels.
    assert {"orders", "inventory"} <= produced_by, described
    assert {"inventory", "orders", "payments", "readmodels"} <= applied_by, described
    assert "orders.order_placed" in {kind for kind, _ in hops}, described

    # The inventory worker applied this order's reservation (at least), and every orders
    # row of the flow was counted by whoever published it.
    assert metric(consuming, "waybill_messages_consumed_total", consumer="inventory",
                  outcome="applied") >= 1
    assert metric(consuming, "waybill_messages_consumed_total", consumer="inventory") > consumed_before
    sent = query(deployment.stack.database_urls["orders"],
                 "SELECT count(*) FROM orders_outboxmessage WHERE sent_at IS NOT NULL AND "
                 "envelope->>'correlation_id' = (SELECT envelope->>'correlation_id' FROM orders_outboxmessage "
                 "WHERE message_type = 'orders.order_placed' AND aggregate_id = %s)", (order_id,))[0][0]
    assert sent >= 2
    wait_for(lambda: sum(metric(address, "waybill_messages_published_total", context="orders")
                         for address in (publishing, backstop)) - published_before >= sent,
             FLOW_TIMEOUT, f"the orders relay and backstop to count the {sent} rows they published")


def test_the_outbox_page_reads_every_contexts_outbox(console):
    page = console("outbox/")
    shown = {cells[0].split()[0] for _, cells in rows(page, "outbox")}
    assert shown == set(CONTEXTS)
    assert "unreadable" not in page


def test_the_shell_reads_each_database_with_that_contexts_own_role_and_no_more(deployment):
    shell = env_of(deployment, "shell-web")
    orders = env_of(deployment, "orders-web")
    assert shell[database_variable("orders")] == orders[database_variable("orders")]
    assert shell[database_variable("default")] == orders[database_variable("default")]
    for alias in DATABASES:
        variable = database_variable(alias)
        # Every process that opens this database does so as the same role, the shell too.
        holders = {name: env[variable] for name in deployment.specs
                   if variable in (env := env_of(deployment, name))}
        assert set(holders.values()) == {shell[variable]}, f"{alias}: {sorted(holders)}"
        assert urlsplit(shell[variable]).username == f"waybill_{alias}"

    # Holding them all together gives the shell no more than each alone: each role still
    # cannot even connect to another context's database.
    names = {alias: urlsplit(shell[database_variable(alias)]).path.lstrip("/") for alias in DATABASES}
    for alias in DATABASES:
        for other, database in names.items():
            if other == alias:
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(make_conninfo(shell[database_variable(alias)], dbname=database)).close()


def test_only_the_shell_has_the_brokers_management_api(deployment, rabbitmq):
    holders = {name for name in deployment.specs if MANAGEMENT_VARIABLE in env_of(deployment, name)}
    assert holders == {"shell-web"}
    url = env_of(deployment, "shell-web")[MANAGEMENT_VARIABLE]
    assert url == rabbitmq.management_url and urlsplit(url).username == rabbitmq.admin_user
    assert httpx.get(f"http://127.0.0.1:{rabbitmq.management_port}/api/overview", timeout=10).status_code == 401


def test_every_waybill_process_serves_its_metrics_on_an_address_of_its_own(deployment):
    addresses = {name: env_of(deployment, name).get(METRICS_VARIABLE) for name in deployment.specs}
    waybill = {name: address for name, address in addresses.items() if deployment.specs[name].kind != "sandbox"}
    assert addresses["payment-sandbox"] is None
    assert all(waybill.values()) and len(set(waybill.values())) == len(waybill)
    for name, address in waybill.items():
        assert address.startswith("127.0.0.1:")  # no sign-in there: loopback only
        assert metric(address, "process_cpu_seconds_total") > 0, name
