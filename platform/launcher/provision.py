"""Databases, roles, vhosts and users for Waybill's bounded contexts, least privilege.

One PostgreSQL database and login role per context, plus the identity database (auth,
sessions, admin) that Django knows as the "default" alias; one RabbitMQ user per
context in the `waybill` vhost. Every call makes fresh random passwords and sets them on
roles and users that already exist, so provisioning twice is harmless and the URLs it
returns are the ones that work.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
from typing import Iterable

from psycopg import connect, sql
from psycopg.conninfo import make_conninfo

from waybill import historylimits
from waybill.manifest import resolve

from .deployment import CONTEXTS, DATABASES, MANIFESTS
from .servers import PostgresServer, RabbitMQServer


def _password() -> str:
    return secrets.token_hex(16)  # hex: needs no quoting in URLs


def provision_postgres(server: PostgresServer, *, aliases: Iterable[str] = DATABASES[1:],
                       identity: str | None = "default") -> dict[str, str]:
    """Create ``waybill_<alias>`` database + role for the identity store and each context's
    database alias (its manifest's, its name by default). ``identity=None``: a server of
    some contexts' databases alone (``launcher.topology``), the identity store is elsewhere.

    Returns ``{"default": url, "<alias>": url, ...}``. A role owns its database and the
    public schema in it, and can connect to nothing else: CONNECT is revoked from PUBLIC
    on every database, the maintenance ones (postgres, template1) included. Roles cannot
    create databases or roles either, so Django's test runner cannot make ``test_*``
    databases with them: tests use the provisioned databases themselves.
    """
    names = ({"default": f"waybill_{identity}"} if identity else {}) | {alias: f"waybill_{alias}" for alias in aliases}
    urls = {}
    with connect(server.superuser_url, autocommit=True) as admin:  # DDL outside a tx
        for maintenance_db in ("postgres", "template1"):
            admin.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC")
                          .format(sql.Identifier(maintenance_db)))
        for alias, name in names.items():
            password = _password()
            role = sql.Identifier(name)
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
            # Utility statements take no bind parameters: the password goes in as a literal.
            admin.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL("ALTER" if exists else "CREATE"), role, sql.Literal(password)))
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
            admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(role, role))
            urls[alias] = server.url(name, password, name)

    for name in names.values():  # schema rights live inside each database
        with connect(make_conninfo(server.superuser_url, dbname=name), autocommit=True) as admin:
            role = sql.Identifier(name)
            admin.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
            admin.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    return urls


def _rabbit_password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def broker_user(context: str) -> str:
    return f"waybill_{context}"


def rabbitmq_user(name: str, password: str, *, tags: Iterable[str] = ()) -> dict:
    """A user of a definitions file: RabbitMQ takes only the salted hash of its password."""
    return {"name": name, "password_hash": _rabbit_password_hash(password),
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": list(tags)}


def rabbitmq_definitions(*, admin_user: str, passwords: dict[str, str], vhost: str = "waybill") -> dict:
    """The vhost, one user per context (``passwords``: context -> password), everyone's
    permissions in it and the event history's retention, as a RabbitMQ definitions document. The admin user itself is not
    in it (the caller has one already, or adds it). Shared by provision_rabbitmq() and the
    docker-compose deployment (launcher.compose), so both grant exactly the same."""
    users, permissions = [], [
        {"user": admin_user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    ]
    for ctx, password in passwords.items():
        user = broker_user(ctx)
        users.append(rabbitmq_user(user, password))
        consumers = MANIFESTS[ctx].consumers
        # A consumer whose bindings are chosen at run time (webhooks) binds its own queues
        # itself, in its worker (waybill.consumer.ContextConsumer.rebind): binding takes
        # "write" on the queue and "read" on the exchange. So exactly its queues, and the
        # events exchange (no other queue: it has "write" on none, and "configure" on none
        # but its task queue, so it can neither bind nor declare anyone else's); which routing
        # keys it may bind them to is narrowed by topic permissions below. The user is
        # the context's, so its web process holds these rights too; it never binds (it
        # changes endpoints and says so; the worker binds).
        rebinding = [rf"waybill\.{c.name}(\.p\d+)?" for c in consumers if c.bindings]
        # Its translator (a consumer of it lags: waybill.translator) reads the translator's
        # queues of its consumers and publishes to waybill.translated, only to its own
        # queues' routing keys (topic permissions below).
        translatable = _translatable(ctx)
        translating = [r"waybill\.translated"] if translatable else []
        # A consumer with projections rebuilds them from the event history (waybill.rebuild):
        # it reads the history stream (a stream is read by consuming it, and consuming it
        # takes nothing from it).
        replaying = [re.escape(historylimits.STREAM)] if any(c.projections for c in consumers) else []
        permissions.append({
            "user": user, "vhost": vhost,
            "configure": rf"^waybill\.tasks\.{ctx}$",
            "write": rf"^({'|'.join([r'waybill\.events', r'waybill\.commands', rf'waybill\.tasks\.{ctx}', *rebinding, *translating])})$",
            # Its own event queues, one per consumer its manifest declares (orders' payments
            # bulkhead too), plus its task queue. Partitioned, each is waybill.<consumer>.p<i>.
            "read": rf"^({'|'.join([*(rf'waybill\.{c.name}(\.p\d+)?' for c in consumers), *(rf'waybill\.translator\.{c.name}(\.p\d+)?' for c in translatable), rf'waybill\.tasks\.{ctx}', *([r'waybill\.events'] if rebinding else []), *replaying])})$",
        })
    return {"vhosts": [{"name": vhost}], "users": users, "permissions": permissions,
            "topic_permissions": _topic_permissions(passwords, vhost),
            # How long the event history stream keeps what (waybill.history).
            "policies": [historylimits.stream_policy(vhost)]}


def _translatable(context: str) -> list:
    """The consumers of ``context`` that may lag (``waybill.translator``): all but one whose
    bindings are chosen at run time."""
    return [consumer for consumer in MANIFESTS[context].consumers if not consumer.bindings]


def _topic_permissions(contexts: Iterable[str], vhost: str) -> list[dict]:
    """A user that binds its own queues (above) may bind them to waybill.events only with
    the routing keys its manifest calls bindable (RabbitMQ checks a binding's key against
    "read"): a process of that context cannot bind itself to events it has no business
    with (orders' internal payment events, or "#"). Publishing stays as it was ("write"),
    but to ``waybill.translated``: only to its own queues' keys."""
    grants = []
    for ctx in contexts:
        if translatable := _translatable(ctx):
            # Publishing to waybill.translated: to its own queues alone.
            queues = "|".join(rf"waybill\.{c.name}" for c in translatable)
            grants.append({"user": broker_user(ctx), "vhost": vhost, "exchange": "waybill.translated",
                           "write": rf"^({queues})(\.p\d+)?$", "read": "^$"})
        for consumer in MANIFESTS[ctx].consumers:
            if not consumer.bindable:
                continue
            types = sorted(resolve(consumer.bindable))
            keys = "|".join(re.escape(t) for t in types)
            grants.append({"user": broker_user(ctx), "vhost": vhost, "exchange": "waybill.events",
                           "write": ".*", "read": rf"^({keys})(\.p\d+)?$"})
    return grants


def provision_rabbitmq(server: RabbitMQServer, *, contexts: Iterable[str] = CONTEXTS,
                       vhost: str = "waybill") -> dict[str, str]:
    """Create the vhost, give the admin user all of it, and one user per context.

    Returns ``{"admin": url, "<context>": url, ...}`` (all on `vhost`); the admin URL is
    for declaring the topology. A context user may publish to the shared
    exchanges and its own task queue, consume its own queues, and declare only its task
    queue: everything else is ACCESS_REFUSED.

    One ``rabbitmqctl import_definitions`` instead of a rabbitmqctl call per user and
    permission: each call starts an Erlang VM (~0.7 s).
    """
    passwords = {ctx: _password() for ctx in contexts}
    urls = {"admin": server.url(server.admin_user, server.admin_password, vhost)}
    urls |= {ctx: server.url(broker_user(ctx), password, vhost) for ctx, password in passwords.items()}

    definitions = rabbitmq_definitions(admin_user=server.admin_user, passwords=passwords, vhost=vhost)
    path = server.data_dir / "definitions.json"  # password hashes: private, and removed
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(definitions, f)
    try:
        server.rabbitmqctl("import_definitions", str(path))
    finally:
        path.unlink()
    return urls
