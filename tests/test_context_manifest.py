"""A context is declared once: one more, throwaway context written as a package with a
manifest (and the models and URLs it names) appears in the settings, the URLs, the
database router, the kernel's registrations, the launcher's process list, provisioning
and the compose file, with no other file of the platform edited."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "__init__.py": "",
    "parcels/__init__.py": "",
    "parcels/manifest.py": """
        from waybill.manifest import Consumer, Context, Job

        CONTEXT = Context(
            name="parcels",
            api={"parcels/": "throwaway.parcels.urls"},
            consumers=(
                Consumer("parcels", handlers="throwaway.parcels.handlers:HANDLERS"),
                Consumer("labels", handlers="throwaway.parcels.handlers:LABEL_HANDLERS",
                         inbox="LabelInbox", dead_letters="LabelDeadLetter", bulkhead=True),
            ),
            jobs=(Job("throwaway.parcels.handlers:parcels_tick", every=30.0),),
            replicas={"labels-worker": 2},
        )
    """,
    # A context's own table, and the outbox, inbox and dead letters every context has (and
    # the bulkhead's inbox and dead letters), on the kernel's abstract models.
    "parcels/models.py": "from django.db import models\n\n"
                         "from waybill.models import DeadLetterBase, InboxMessageBase, OutboxMessageBase\n\n"
                         "class Parcel(models.Model):\n    order_id = models.UUIDField()\n"
                         + "".join(f"\nclass {name}({base}):\n    pass\n" for name, base in (
                             ("OutboxMessage", "OutboxMessageBase"), ("InboxMessage", "InboxMessageBase"),
                             ("DeadLetter", "DeadLetterBase"), ("LabelInbox", "InboxMessageBase"),
                             ("LabelDeadLetter", "DeadLetterBase"))),
    "parcels/handlers.py": """
        from apps.orders import contracts as orders


        def on_order_placed(envelope, message):
            pass


        def parcels_tick():
            pass


        HANDLERS = {orders.OrderPlaced: on_order_placed}
        LABEL_HANDLERS = {orders.OrderPlaced: on_order_placed}
    """,
    "parcels/urls.py": """
        from django.http import JsonResponse
        from django.urls import path

        urlpatterns = [path("ping/", lambda request: JsonResponse({"pong": True}), name="parcels-ping")]
    """,
}

PROBE = """
import json, os
import django
django.setup()
from django.conf import settings
from django.db import router
from django.urls import resolve
from waybill import contexts
from throwaway.parcels.models import LabelInbox, Parcel
from launcher import compose, deployment, provision

registrations = {c.name: c for c in contexts.all_contexts()}
definitions = provision.rabbitmq_definitions(admin_user="admin", passwords={"parcels": "x"})
print(json.dumps({
    "contexts": list(settings.WAYBILL_CONTEXTS),
    "installed": "throwaway.parcels" in settings.INSTALLED_APPS,
    "database": "parcels" in settings.DATABASES,
    "router": [router.db_for_write(Parcel), router.db_for_write(LabelInbox)],
    "url": resolve("/api/v1/parcels/ping/").url_name,
    "registrations": {name: {"inbox": c.inbox.__name__, "relay": c.relay,
                             "jobs": [j.name for j in c.periodic]}
                      for name, c in registrations.items() if name in ("parcels", "labels")},
    "processes": {p.name: dict(p.fixed) for p in deployment.processes() if p.context == "parcels"},
    "routes": {prefix: ctx for prefix, ctx in deployment.ROUTES.items() if ctx == "parcels"},
    "compose": sorted(name for name in compose.services() if name.startswith("parcels")),
    "compose_replicas": compose.services()["parcels-labels-worker"]["deploy"],
    "compose_databases": compose.services()["postgres"]["environment"]["WAYBILL_DATABASE_ALIASES"],
    "broker_read": [p["read"] for p in definitions["permissions"] if p["user"] == "waybill_parcels"],
}))
"""


@pytest.fixture
def throwaway(tmp_path):
    for name, text in FILES.items():
        path = tmp_path / "throwaway" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_one_more_context_from_its_manifest_alone_appears_everywhere(throwaway):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO / 'platform'}:{REPO}:{throwaway}",
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "WAYBILL_DATA_DIR": str(throwaway / "data"),
        "WAYBILL_CONTEXT_PACKAGES": "apps,throwaway",
    }
    (throwaway / "data").mkdir()
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert "parcels" in seen["contexts"] and seen["installed"] and seen["database"]
    assert seen["router"] == ["parcels", "parcels"]
    assert seen["url"] == "parcels-ping"
    assert seen["registrations"] == {
        "parcels": {"inbox": "InboxMessage", "relay": True, "jobs": ["throwaway.parcels.handlers.parcels_tick"]},
        "labels": {"inbox": "LabelInbox", "relay": False, "jobs": []},
    }
    assert seen["processes"] == {
        "parcels-web": {}, "parcels-worker": {"WAYBILL_CONSUMERS": "parcels"},
        "parcels-labels-worker": {"WAYBILL_CONSUMERS": "labels"},
        "parcels-labels-worker-2": {"WAYBILL_CONSUMERS": "labels"}, "parcels-relay": {},
    }
    assert seen["routes"] == {"/api/v1/parcels/": "parcels", "/static/parcels/": "parcels"}
    assert seen["compose"] == ["parcels-labels-worker", "parcels-relay", "parcels-web", "parcels-worker"]
    assert seen["compose_replicas"] == {"replicas": 2}
    assert "parcels" in seen["compose_databases"].split()
    assert seen["broker_read"] == [r"^(waybill\.parcels(\.p\d+)?|waybill\.labels(\.p\d+)?|"
                                   r"waybill\.translator\.parcels(\.p\d+)?|waybill\.translator\.labels(\.p\d+)?|"
                                   r"waybill\.tasks\.parcels)$"]


def test_the_platform_contexts_are_the_manifests():
    from django.conf import settings

    from waybill import manifest

    assert tuple(manifest.discover()) == settings.ALL_CONTEXTS == ("inventory", "orders", "readmodels", "webhooks")


def test_a_manifest_that_would_silently_win_over_another_is_refused():
    from waybill.manifest import Consumer, Context, _refuse_clashes

    def context(name, *consumers, **more):
        return Context(name=name, consumers=tuple(Consumer(c, handlers="m:H") for c in (name, *consumers)), **more)

    with pytest.raises(ValueError, match="route /ws/ is declared by both 'a' and 'b'"):
        _refuse_clashes([context("a", websockets="m:p"), context("b", websockets="m:p")])
    with pytest.raises(ValueError, match="route /api/v1/x/ is declared by both"):
        _refuse_clashes([context("a", api={"x/": "m"}), context("b", api={"x/": "n"})])
    with pytest.raises(ValueError, match="consumer 'a' is declared by both 'a' and 'c'"):
        _refuse_clashes([context("a"), context("c", "a")])
    with pytest.raises(ValueError, match="its first consumer must be named 'd'"):
        Context(name="d", consumers=(Consumer("e", handlers="m:H"),))
    _refuse_clashes([context("a", api={"x/": "m"}), context("b", "bulk", api={"y/": "n"})])  # no clash


def test_a_consumer_that_binds_at_run_time_names_what_it_may_bind():
    """The launcher grants its broker user exactly those routing keys (topic permissions)."""
    from launcher import provision
    from waybill.manifest import Consumer

    with pytest.raises(ValueError, match="name what is bindable"):
        Consumer("a", handlers="m:H", bindings="m:b")
    with pytest.raises(ValueError, match="no bindings function"):
        Consumer("a", handlers="m:H", bindable="m:T")
    definitions = provision.rabbitmq_definitions(admin_user="admin", passwords={"webhooks": "x", "orders": "y"})
    # webhooks alone binds at run time
    [grant] = [g for g in definitions["topic_permissions"] if g["exchange"] == "waybill.events"]
    assert (grant["user"], grant["exchange"]) == ("waybill_webhooks", "waybill.events")
    assert re.match(grant["read"], "orders.order_placed") and re.match(grant["read"], "orders.order_placed.p3")
    assert not re.match(grant["read"], "orders.payment_requested") and not re.match(grant["read"], "#")
    webhooks = next(p for p in definitions["permissions"] if p["user"] == "waybill_webhooks")
    assert re.match(webhooks["write"], "waybill.webhooks.p1") and re.match(webhooks["read"], "waybill.events")
    orders = next(p for p in definitions["permissions"] if p["user"] == "waybill_orders")
    assert not re.match(orders["read"], "waybill.events") and not re.match(orders["write"], "waybill.orders")
