"""Every change to webhooks: registering and deleting endpoints, binding the webhooks queue
to the types they want, recording deliveries (in the webhooks consumer's inbox
transaction), sending them (outside any transaction) and redelivering. Webhooks emit no
bus messages: their effect is the HTTP POST."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from waybill.api import Envelope, MessageRefused, backoff_delay, bindings_changed
from waybill.messages import missing_steps, read_as, versions_of

from . import delivery, signing
from .events import AUDIENCE, Audience, allowed_types
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)
DB = "webhooks"
Status = WebhookDelivery.Status
# A claimed batch comes due again this long after its last POST must have ended: covers
# resolving names (the resolver's own timeouts) and recording outcomes.
LEASE_MARGIN_SECONDS = 30.0
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 20
NOT_PERMITTED = "owner may not receive this event"


@dataclass
class WebhookError(Exception):
    """A registration refused: ``field`` and the reason, for a 400."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


# --- endpoints ---------------------------------------------------------------------------------
def _url_check(url: str) -> None:
    """https:// to a host that is not ours, or, where allowed (development and tests), plain
    http:// to loopback. Refusing private and loopback addresses keeps an integrator from
    making our workers call our own internal services (SSRF). A hostname that *resolves* to
    such an address is not caught here (see docs/webhooks.md)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookError("url", "Must be an absolute https:// URL.")
    if parts.username or parts.password:
        raise WebhookError("url", "Must not contain credentials; verify our signature instead.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        address = delivery.unwrapped(address)
    loopback = host == "localhost" or host.endswith(".localhost") or (address is not None and address.is_loopback)
    if loopback:
        if not delivery.loopback_allowed():
            raise WebhookError("url", "Loopback addresses are not allowed here.")
        return  # http or https, both fine on loopback
    if parts.scheme != "https":
        raise WebhookError("url", "Must use https:// (plain http:// only to loopback, in development).")
    if address is not None and not delivery.public_unicast(address):
        raise WebhookError("url", "Must be a public unicast address, not a private, link-local, multicast "
                                  "or reserved one.")


def webhook_endpoint_register(*, owner_id: int, owner_is_staff: bool, url: str,
                              event_types: list[str], schema_versions: dict[str, int] | None = None,
                              ) -> WebhookEndpoint:
    """Register ``url`` for ``event_types`` with a new secret (the caller shows it once),
    each type's data sent in the version ``schema_versions`` names, or else its newest.

    Invariants: the URL passes the URL policy; every type is one this owner may receive, at
    a registered version; an owner has at most WAYBILL_WEBHOOK_MAX_ENDPOINTS active
    endpoints. Raises ``WebhookError`` otherwise. Emits no message.

    Its types take effect once the webhooks worker has bound them (``bound_types``,
    ``receiving`` in the API; ``webhook_bindings_reconcile``), usually well within a second."""
    _url_check(url)
    allowed = allowed_types(staff=owner_is_staff)
    if not event_types:
        raise WebhookError("event_types", "Name at least one event type.")
    if unknown := [t for t in event_types if t not in AUDIENCE]:
        raise WebhookError("event_types", f"Unknown event types {unknown}; known: {list(allowed)}.")
    if refused := [t for t in event_types if t not in allowed]:
        raise WebhookError("event_types", f"Staff only: {refused}.")
    versions = _versions_chosen(event_types, schema_versions or {})
    with transaction.atomic(using=DB):
        endpoints = WebhookEndpoint.objects.using(DB)
        limit = settings.WAYBILL_WEBHOOK_MAX_ENDPOINTS
        if endpoints.select_for_update().filter(owner_id=owner_id, active=True).count() >= limit:
            raise WebhookError("url", f"At most {limit} endpoints per user; delete one first.")
        endpoint = endpoints.create(owner_id=owner_id, url=url, event_types=sorted(set(event_types)),
                                    schema_versions=versions, secret=signing.secret_generate())
        transaction.on_commit(lambda: bindings_changed(BINDINGS), using=DB)
        return endpoint


# A delivery's last_error when the endpoint's version cannot express the event (the reason,
# an exception's text, is logged for staff only, as with every other failure).
NOT_EXPRESSIBLE = "event not expressible in the endpoint's schema version"


def _versions_chosen(event_types: list[str], asked: dict[str, int]) -> dict[str, int]:
    if stray := sorted(set(asked) - set(event_types)):
        raise WebhookError("schema_versions", f"Not among the endpoint's event types: {stray}.")
    chosen = {}
    for message_type in sorted(set(event_types)):
        known = versions_of(message_type)
        version = asked.get(message_type, known[-1])
        if version not in known:
            raise WebhookError("schema_versions", f"{message_type} has versions {known}, not {version}.")
        if missing_steps(message_type, version):
            # Every delivery would fail: no chain of steps from the version read to this one.
            raise WebhookError("schema_versions", f"{message_type} v{version} cannot be sent yet.")
        chosen[message_type] = version
    return chosen


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Stop sending to ``endpoint``: it is deactivated (its delivery history stays for the
    admin) and its pending deliveries are failed. Emits no message."""
    now = timezone.now()
    with transaction.atomic(using=DB):
        WebhookEndpoint.objects.using(DB).filter(pk=endpoint.pk).update(active=False, deleted_at=now)
        WebhookDelivery.objects.using(DB).filter(endpoint_id=endpoint.pk, status=Status.PENDING).update(
            status=Status.FAILED, next_attempt_at=None, claim=None, last_error="endpoint deleted")
        # Its types stay bound until the next reconcile: a few more events consumed for nobody.
        transaction.on_commit(lambda: bindings_changed(BINDINGS), using=DB)


# --- which types the webhooks queue binds ------------------------------------------------------
# The consumer (named for the context) whose queue these are.
BINDINGS = "webhooks"
# Serializes reconciles across processes on PostgreSQL (any 64-bit number of our own);
# SQLite's transactions here take its write lock at BEGIN, which does the same.
_RECONCILE_LOCK = 0x77656268_6F6F6B73  # "webhooks"


def _bindings_stale() -> bool:
    """Whether some endpoint's bound types are not what they should be: plain reads, no
    transaction (see webhook_deliveries_send_due), few rows (a subset of the endpoints)."""
    endpoints = WebhookEndpoint.objects.using(DB)
    if any({t for t in wanted if t in AUDIENCE} != set(bound) for wanted, bound in
           endpoints.filter(active=True).values_list("event_types", "bound_types")):
        return True
    return endpoints.filter(active=False).exclude(bound_types=[]).exists()


def webhook_bindings_reconcile(*, bind, resync: bool) -> bool:
    """The webhooks consumer's ``bindings`` (its manifest): bind the webhooks queue to the
    types that at least one active endpoint subscribes to, and to no other, then record on
    each endpoint what is bound for it. Returns whether it called ``bind``. Emits no message.

    Run by the kernel in the webhooks worker (under its broker user, which may bind its own
    queues and nothing else) and in the topology step; a web process or the admin changes
    endpoints only, and says so with ``bindings_changed``.

    Invariants, so that no event an endpoint subscribed to is lost:
    - ``bind`` returns before ``bound_types`` commits, and deliveries are made only for an
      endpoint's ``bound_types``: a type becomes visible to the handler only once every
      event of it published from then on reaches the queue;
    - a type is unbound only when no active endpoint wants it, as read under a lock held
      across the read, the broker's changes and the record: two reconciles (worker
      replicas, the topology step) never interleave, so a stale one cannot unbind a type
      that a later one just bound and recorded for a new endpoint."""
    if not resync and not _bindings_stale():
        return False
    with transaction.atomic(using=DB):
        connection = connections[DB]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_RECONCILE_LOCK])
        endpoints = WebhookEndpoint.objects.using(DB)
        active = list(endpoints.filter(active=True).only("id", "event_types", "bound_types"))
        # Types no longer offered stay unbound (and would be delivered to nobody).
        wanted = {t for endpoint in active for t in endpoint.event_types if t in AUDIENCE}
        bind(sorted(wanted))
        for endpoint in active:
            bound = sorted(t for t in endpoint.event_types if t in wanted)
            if bound != sorted(endpoint.bound_types):
                endpoints.filter(pk=endpoint.pk).update(bound_types=bound)
        endpoints.filter(active=False).exclude(bound_types=[]).update(bound_types=[])
    return True


# --- who may receive what ----------------------------------------------------------------------
def _owners(owner_ids) -> dict[int, tuple[bool, bool]]:
    """{user id: (is_active, is_staff)} as the identity database says *now*: rights are
    never copied, so a demoted or deactivated user stops receiving at once."""
    users = get_user_model().objects.filter(pk__in=set(owner_ids))
    return {pk: (active, staff) for pk, active, staff in users.values_list("pk", "is_active", "is_staff")}


def _may_receive(*, rights: tuple[bool, bool] | None, owner_id: int, event_type: str,
                 customer_id: int | None) -> bool:
    audience = AUDIENCE.get(event_type)
    if rights is None or audience is None:
        return False  # the user is gone, or the type is no longer offered
    active, staff = rights
    if not active:
        return False
    if audience is Audience.STAFF:
        return staff
    if audience is Audience.CUSTOMER:
        return staff or (customer_id is not None and owner_id == customer_id)
    return True


# --- deliveries --------------------------------------------------------------------------------
def webhook_body(*, envelope: Envelope, data: dict) -> str:
    """What a receiver gets: the event's id, type and schema version (of ``data``: the
    version its endpoint registered for), when it happened, which aggregate and version
    (retries can reorder deliveries: order by version), and the event's payload."""
    wire = envelope.model_dump(mode="json")
    return json.dumps({
        "id": wire["id"], "type": envelope.type, "schema_version": envelope.schema_version,
        "occurred_at": wire["occurred_at"],
        "aggregate_id": envelope.aggregate_id, "aggregate_version": envelope.aggregate_version,
        "data": data,
    }, separators=(",", ":"))


def webhook_deliveries_create(*, envelope: Envelope, data: dict, customer_id: int | None = None) -> int:
    """Record a pending delivery of this event for every active endpoint that wants its
    type and may see it (an order's events: its customer's endpoints and staff's); a failed
    one where the endpoint's version cannot express the event. Runs in the webhooks
    consumer's inbox transaction; sends nothing. At most one delivery per endpoint and
    message, however often the message comes. Returns how many endpoints want it."""
    if envelope.type not in AUDIENCE:
        return 0
    # Filtered here, not in SQL: SQLite has no JSON "contains", and endpoints are few. Only
    # bound types: one not bound yet may have missed events published before it was (see
    # webhook_bindings_reconcile); from the moment it is, it misses none.
    candidates = [e for e in WebhookEndpoint.objects.using(DB).filter(active=True)
                  .only("id", "owner_id", "event_types", "bound_types", "schema_versions")
                  if envelope.type in e.event_types and envelope.type in e.bound_types]
    if not candidates:
        return 0
    rights = _owners(e.owner_id for e in candidates)
    wanted = [e.pk for e in candidates
              if _may_receive(rights=rights.get(e.owner_id), owner_id=e.owner_id, event_type=envelope.type,
                              customer_id=customer_id)]
    if not wanted:
        return 0
    # Each endpoint gets the version it registered for: the data as the consumer read it,
    # or the message as published converted by the producer's steps. One a step cannot
    # convert (an order in a currency a v1 reader would misread) is recorded failed, not
    # dropped: its owner sees it in the deliveries, staff the reason in the log.
    versions = {e.pk: e.schema_version_for(envelope.type) for e in candidates}
    bodies: dict[int, tuple[str, str]] = {}  # version -> (body, why it cannot be sent)
    for version in sorted({versions[pk] for pk in wanted}):
        try:
            converted, message = ((envelope, None) if version == envelope.schema_version
                                  else read_as(envelope.as_published, version))
        except MessageRefused as refused:
            log.warning("webhooks: %s %s cannot be sent as v%d: %s", envelope.type, envelope.id, version,
                        refused.reason)
            bodies[version] = ("", NOT_EXPRESSIBLE)
            continue
        bodies[version] = (webhook_body(envelope=converted,
                                        data=data if message is None else message.model_dump(mode="json")), "")
    now = timezone.now()
    rows = []
    for pk in wanted:
        body, refusal = bodies[versions[pk]]
        rows.append(WebhookDelivery(endpoint_id=pk, message_id=envelope.id, event_type=envelope.type, body=body,
                                    next_attempt_at=None if refusal else now, last_error=refusal[:4000],
                                    status=Status.FAILED if refusal else Status.PENDING))
    created = WebhookDelivery.objects.using(DB).bulk_create(rows, ignore_conflicts=True)
    return len(created)


def webhook_deliveries_redeliver(*, delivery_ids: list, by: str) -> int:
    """Send these deliveries again now, with a fresh set of tries, whatever their status
    (a receiver that lost one may ask), except one that could never be made (its
    endpoint's version cannot express the event). Endpoints deleted since are skipped. Records who
    asked and when. Returns how many will be sent."""
    now = timezone.now()
    # Not one that could never be made (no body: its version could not be given).
    return WebhookDelivery.objects.using(DB).filter(id__in=delivery_ids, endpoint__active=True).exclude(
        body="").update(
        status=Status.PENDING, attempts=0, next_attempt_at=now, claim=None,
        redeliveries=F("redeliveries") + 1, last_redelivered_at=now, last_redelivered_by=by[:150],
    )


def webhook_deliveries_send_due() -> int:
    """The webhooks consumer's periodic job: claim the due deliveries, POST them (several at
    once, outside any transaction), record each outcome. Returns how many it sent.

    Safe in several processes at once: a sender claims rows under ``skip_locked`` and a
    lease, so no two send one delivery at the same time. The lease outlasts the whole
    batch (every POST ends by WAYBILL_WEBHOOK_TIMEOUT_SECONDS: ``delivery.post``), so only a
    sender that dies mid-way leaves rows that come due again (a receiver may then see a
    delivery twice: it deduplicates on Waybill-Webhook-Id).

    Each delivery goes out only if its owner may receive it *now* (active; staff, where the
    event needs it): otherwise it fails without a POST."""
    token = uuid.uuid4()
    now = timezone.now()
    deliveries = WebhookDelivery.objects.using(DB)
    due = deliveries.filter(status=Status.PENDING, next_attempt_at__lte=now)
    # A plain read first: on SQLite every transaction here takes the database's write lock
    # at BEGIN (IMMEDIATE), and this runs a few times a second beside the projector.
    if not due.exists():
        return 0
    concurrency = max(1, settings.WAYBILL_WEBHOOK_CONCURRENCY)
    with transaction.atomic(using=DB):
        ids = list(
            due.select_for_update(skip_locked=True)
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[: settings.WAYBILL_WEBHOOK_BATCH_SIZE]
        )
        if not ids:
            return 0
        deliveries.filter(id__in=ids).update(claim=token, next_attempt_at=now + lease_for(len(ids)))
    claimed = list(deliveries.filter(id__in=ids, claim=token).select_related("endpoint"))
    rights = _owners(row.endpoint.owner_id for row in claimed)
    refused = [row for row in claimed if not _permitted(row, rights)]
    for row in refused:
        _refusal_record(row=row, token=token)
    claimed = [row for row in claimed if row not in refused]

    def send(row: WebhookDelivery) -> delivery.Outcome:
        return delivery.post(url=row.endpoint.url, secret=row.endpoint.secret, delivery_id=str(row.id),
                             body=row.body.encode())

    if len(claimed) <= 1:
        outcomes = [send(row) for row in claimed]
    else:
        with ThreadPoolExecutor(min(len(claimed), concurrency), thread_name_prefix="webhook") as pool:
            outcomes = list(pool.map(send, claimed))
    for row, outcome in zip(claimed, outcomes, strict=True):
        _outcome_record(row=row, outcome=outcome, token=token)
    return len(claimed)


def lease_for(count: int) -> timedelta:
    """How long a sender holds ``count`` claimed deliveries: the rounds its pool needs,
    each at most one POST's deadline, plus a margin."""
    rounds = math.ceil(count / max(1, settings.WAYBILL_WEBHOOK_CONCURRENCY))
    return timedelta(seconds=rounds * settings.WAYBILL_WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)


def _permitted(row: WebhookDelivery, rights: dict) -> bool:
    customer_id = None
    if AUDIENCE.get(row.event_type) is Audience.CUSTOMER:
        customer_id = (json.loads(row.body).get("data") or {}).get("customer_id")
    owner_id = row.endpoint.owner_id
    return _may_receive(rights=rights.get(owner_id), owner_id=owner_id, event_type=row.event_type,
                        customer_id=customer_id)


def _refusal_record(*, row: WebhookDelivery, token: uuid.UUID) -> None:
    WebhookDelivery.objects.using(DB).filter(pk=row.pk, claim=token).update(
        status=Status.FAILED, next_attempt_at=None, claim=None, last_status_code=None,
        last_response_ms=None, last_error=NOT_PERMITTED)


def _outcome_record(*, row: WebhookDelivery, outcome: delivery.Outcome, token: uuid.UUID) -> None:
    """The attempt, always; the delivery's new state only if our claim still holds (an
    operator's redeliver meanwhile wins). The owner's API shows only the error class; the
    detail stays on the attempt, for the admin."""
    attempts = row.attempts + 1
    now = timezone.now()
    if outcome.succeeded:
        state = {"status": Status.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif attempts >= settings.WAYBILL_WEBHOOK_MAX_ATTEMPTS:
        state = {"status": Status.FAILED, "next_attempt_at": None}
        log.warning("webhook delivery %s to endpoint %s failed for good after %d attempts: %s",
                    row.pk, row.endpoint_id, attempts, outcome.error)
    else:
        delay = backoff_delay(attempts, base=settings.WAYBILL_WEBHOOK_RETRY_BASE_SECONDS,
                              cap=settings.WAYBILL_WEBHOOK_RETRY_MAX_SECONDS)
        state = {"next_attempt_at": now + timedelta(seconds=delay)}
    with transaction.atomic(using=DB):
        WebhookAttempt.objects.using(DB).create(
            delivery_id=row.pk, started_at=outcome.started_at, status_code=outcome.status_code,
            response_ms=outcome.response_ms, error=outcome.error, detail=outcome.detail,
            succeeded=outcome.succeeded,
        )
        WebhookDelivery.objects.using(DB).filter(pk=row.pk, claim=token).update(
            attempts=attempts, claim=None, last_status_code=outcome.status_code,
            last_response_ms=outcome.response_ms, last_error=outcome.error, **state,
        )


# --- retention ---------------------------------------------------------------------------------
def webhook_deliveries_prune() -> int:
    """Forget finished deliveries (delivered or failed, with their attempts) older than
    WAYBILL_WEBHOOK_RETENTION_SECONDS since created and last redelivered, then deleted
    endpoints with nothing left. Pending deliveries are never pruned. In bounded batches,
    so a first large prune holds no long transaction; harmless to run in several
    processes at once. Returns how many deliveries were deleted. Emits no message.

    The context's periodic job (every few minutes: its manifest); the consumer's inbox is
    pruned by the kernel."""
    cutoff = timezone.now() - timedelta(seconds=settings.WAYBILL_WEBHOOK_RETENTION_SECONDS)
    deliveries = WebhookDelivery.objects.using(DB)
    old = deliveries.filter(status__in=(Status.DELIVERED, Status.FAILED), created_at__lt=cutoff).filter(
        Q(last_redelivered_at__isnull=True) | Q(last_redelivered_at__lt=cutoff))
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        ids = list(old.values_list("id", flat=True)[:PRUNE_BATCH])
        if not ids:
            break
        with transaction.atomic(using=DB):
            WebhookAttempt.objects.using(DB).filter(delivery_id__in=ids).delete()
            deleted += deliveries.filter(id__in=ids).delete()[0]
    WebhookEndpoint.objects.using(DB).filter(active=False, deleted_at__lt=cutoff, deliveries__isnull=True).delete()
    return deleted
