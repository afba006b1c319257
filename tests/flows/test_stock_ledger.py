"""The event-sourced stock ledger (``apps.inventory.ledger``): every stock change is an entry
appended with an expected version, the product row its inline projection. Two writers of
one version cannot both append; a reservation that lost the race reads again and retries,
on PostgreSQL with real concurrent transactions, and no unit is oversold; the ledger folds
to every row, from its first entry and from a snapshot plus the entries after it."""

from __future__ import annotations

import copy
import io
import threading
import uuid
from decimal import Decimal

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connections, transaction
from django.db.utils import IntegrityError, load_backend

from apps.inventory import contracts, ledger, services
from apps.inventory.models import Product, StockEntry, StockSnapshot

pytestmark = pytest.mark.django_db(databases=["inventory"])


def _line(sku: str, quantity: int = 1) -> contracts.StockLine:
    return contracts.StockLine(sku=sku, quantity=quantity)


def test_every_stock_change_is_an_entry_and_the_row_is_their_fold():
    services.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=5)
    order = uuid.uuid4()
    services.stock_reserve(order_id=order, lines=[_line("LAMP-1", 2)])
    services.stock_reserve_many(requests=[services.StockRequest(uuid.uuid4(), [_line("LAMP-1")])
                                          for _ in range(2)])
    services.product_update(sku="LAMP-1", on_hand=9, name="Desk lamp")
    services.product_update(sku="LAMP-1", price=Decimal("22.00"))  # not stock: a version, no entry
    services.stock_release(order_id=order)

    entries = list(StockEntry.objects.filter(sku="LAMP-1").values_list("version", "kind", "on_hand_delta",
                                                                        "reserved_delta"))
    assert entries == [(1, "received", 5, 0), (2, "reserved", 0, 2), (3, "reserved", 0, 1), (4, "reserved", 0, 1),
                       (5, "adjusted", 4, 0), (7, "released", 0, -2)]
    product = Product.objects.get(sku="LAMP-1")
    assert (product.on_hand, product.reserved, product.version, product.name) == (9, 2, 7, "Desk lamp")
    assert ledger.fold("LAMP-1") == ledger.Stock(on_hand=9, reserved=2, version=7)
    assert ledger.fold_check() == []


def test_a_second_writer_of_one_version_cannot_append_and_changes_nothing():
    product = services.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=5)
    stale = copy.copy(product)
    with transaction.atomic(using="inventory"):
        ledger.append(product, ledger.Change("LAMP-1", ledger.Kind.RESERVED, reserved_delta=1),
                      expected_version=1)
    with pytest.raises(ledger.ConcurrencyConflict), transaction.atomic(using="inventory"):
        ledger.append(stale, ledger.Change("LAMP-1", ledger.Kind.RESERVED, reserved_delta=5), expected_version=1)
    # Even past the row's check, the ledger refuses a second entry at one version.
    with pytest.raises(IntegrityError), transaction.atomic(using="inventory"):
        StockEntry.objects.create(sku="LAMP-1", version=2, kind="reserved", reserved_delta=5)
    assert (Product.objects.get(sku="LAMP-1").reserved, StockEntry.objects.count()) == (1, 2)


def test_a_snapshot_plus_the_entries_after_it_equals_the_full_fold(monkeypatch):
    monkeypatch.setattr(ledger, "SNAPSHOT_EVERY", 4)
    services.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=50)
    orders = [uuid.uuid4() for _ in range(13)]
    for n, order in enumerate(orders):
        services.stock_reserve(order_id=order, lines=[_line("LAMP-1", 2)])
        if n % 5 == 4:
            services.product_update(sku="LAMP-1", price=Decimal(20 + n))  # a version without an entry
    services.stock_reserve_many(requests=[services.StockRequest(uuid.uuid4(), [_line("LAMP-1")]) for _ in range(6)])
    for order in orders[:5]:
        services.stock_release(order_id=order)
    services.product_update(sku="LAMP-1", on_hand=60)

    snapshots = list(StockSnapshot.objects.filter(sku="LAMP-1").order_by("version"))
    versions = [snapshot.version for snapshot in snapshots]
    # One each time a multiple of 4 was crossed, however versions skipped (a price change,
    # a batch of six reservations in one statement).
    assert versions == sorted(set(versions)) and len(versions) >= 6 and versions[0] <= 4
    assert all(later // 4 > earlier // 4 for earlier, later in zip(versions, versions[1:]))
    for snapshot in snapshots:  # each holds the fold at its version
        at = ledger.fold("LAMP-1", from_snapshot=False, up_to=snapshot.version)
        assert (snapshot.on_hand, snapshot.reserved) == (at.on_hand, at.reserved)
    full = ledger.fold("LAMP-1", from_snapshot=False)
    product = Product.objects.get(sku="LAMP-1")
    assert ledger.fold("LAMP-1") == full == ledger.Stock(on_hand=60, reserved=22, version=product.version)
    for version in range(1, product.version + 1):  # at any version, from the snapshot before it
        assert ledger.fold("LAMP-1", up_to=version) == ledger.fold("LAMP-1", from_snapshot=False, up_to=version)


def test_the_fold_check_names_a_row_that_is_not_its_ledgers_fold():
    services.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=5)
    Product.objects.filter(sku="LAMP-1").update(on_hand=7)  # written around the ledger
    assert ledger.fold_check() == ["LAMP-1: the row says 7 on hand, 0 reserved; its ledger folds to 5, 0 (v1)"]


# --- real concurrent writers, on PostgreSQL ----------------------------------------------

@pytest.fixture
def inventory_on_postgres(postgres):
    """A fresh PostgreSQL database with inventory's tables, and a way to give a thread the
    ``inventory`` alias on it: Django's connections are per thread, so each writer below
    has its own connection and its own transactions, as two workers would."""
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.superuser_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    settings = copy.deepcopy(connections.settings["default"])
    settings.update(ENGINE="django.db.backends.postgresql", NAME=name, USER="postgres",
                    PASSWORD=postgres.superuser_password, HOST="127.0.0.1", PORT=str(postgres.port), OPTIONS={},
                    CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=False)
    opened = []

    def on_postgres():
        connection = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "inventory")
        connections["inventory"] = connection
        return connection

    def in_thread(target):
        def run():
            connection = on_postgres()
            try:
                target()
            finally:
                connection.close()  # in its own thread, as Django wants
        return run

    here = connections["inventory"]
    opened.append(on_postgres())
    try:
        call_command("migrate", "inventory", database="inventory", verbosity=0)
        services.product_create(sku="LAST-1", name="The last few", price=Decimal("5.00"), on_hand=3)
        yield in_thread
    finally:
        connections["inventory"] = here
        for connection in opened:
            connection.close()
        with psycopg.connect(postgres.superuser_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.django_db(databases=["inventory"], transaction=True)
def test_concurrent_reservations_that_lose_the_race_read_again_and_none_oversells(inventory_on_postgres, monkeypatch,
                                                                                 caplog):
    # The first append of each of two writers waits for the other's: both have read the
    # same version, so exactly one of them may append it.
    both_read = threading.Barrier(2, timeout=30)
    first_call = threading.local()
    append = ledger.append

    def append_when_both_have_read(product, change, *, expected_version):
        if not getattr(first_call, "done", False) and threading.current_thread().name.startswith("writer-pair"):
            first_call.done = True
            both_read.wait()
        return append(product, change, expected_version=expected_version)

    monkeypatch.setattr(ledger, "append", append_when_both_have_read)
    results, errors = {}, []

    def reserve(order_id):
        def run():
            try:
                results[order_id] = services.stock_reserve(order_id=order_id, lines=[_line("LAST-1")]).status
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
        return run

    orders = [uuid.uuid4() for _ in range(8)]
    threads = [threading.Thread(target=inventory_on_postgres(reserve(order)),
                                name=f"writer-pair-{n}" if n < 2 else f"writer-{n}") for n, order in enumerate(orders)]
    with caplog.at_level("INFO", logger="apps.inventory.services"):
        for thread in threads[:2]:
            thread.start()
        for thread in threads[:2]:
            thread.join(timeout=60)
        for thread in threads[2:]:  # then a crowd, for the last unit and beyond
            thread.start()
        for thread in threads[2:]:
            thread.join(timeout=60)
    assert not errors, errors
    assert any("moved while reserving" in record.getMessage() for record in caplog.records), "no writer lost a race"

    check = threading.Thread(target=inventory_on_postgres(lambda: results.update(
        product=Product.objects.using("inventory").get(sku="LAST-1"), problems=ledger.fold_check())))
    check.start()
    check.join(timeout=60)
    statuses = [results[order] for order in orders]
    assert statuses.count("reserved") == 3 and statuses.count("rejected") == 5  # 3 units: no more, no fewer
    assert (results["product"].on_hand, results["product"].reserved) == (3, 3)
    assert results["problems"] == []


@pytest.mark.django_db(databases="__all__")
def test_staff_read_a_products_ledger_through_the_api_and_nobody_else(client, django_user_model):
    services.product_create(sku="LAMP-1", name="Lamp", price=Decimal("20.00"), on_hand=5)
    services.stock_reserve(order_id=uuid.uuid4(), lines=[_line("LAMP-1", 2)])
    url = "/api/v1/inventory/products/LAMP-1/ledger/"
    assert client.get(url).status_code in (401, 403)
    client.force_login(django_user_model.objects.create_user("bob", password="x" * 20))
    assert client.get(url).status_code == 403
    client.force_login(django_user_model.objects.create_user("staff", password="x" * 20, is_staff=True))
    body = client.get(url).json()
    assert (body["on_hand"], body["reserved"], body["version"]) == (5, 2, 2)
    assert [(e["version"], e["kind"], e["reserved_delta"]) for e in body["entries"]] == [(2, "reserved", 2),
                                                                                        (1, "received", 0)]
    assert client.get("/api/v1/inventory/products/NOPE-1/ledger/").status_code == 404
    call_command("stock_fold_check", stdout=io.StringIO())
    Product.objects.filter(sku="LAMP-1").update(reserved=1)
    with pytest.raises(CommandError, match="LAMP-1: the row says 5 on hand, 1 reserved"):
        call_command("stock_fold_check")
