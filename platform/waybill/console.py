"""What the operations console reads (``waybill.console_admin`` shows it): one flow across
every context, the dead letters of every consumer grouped by cause, each outbox's health
and the keys it holds back, and each consumer's queue and inbox.

Each context's rows are read from its own database through its own alias: in services
mode, the shell's connection to that database uses that context's role, so the console
reads nothing a context could not read itself, and no context's role gains a right.

What a context knows of a message beyond its outbox and inbox (the order saga's steps, a
webhook's deliveries) it tells the console through ``flow_notes``, registered from its
admin module, so the kernel imports no context.

Finding a flow reads the messaging tables' JSON envelopes by correlation id: a scan of
each table, bounded by their retention (``WAYBILL_OUTBOX_RETENTION_SECONDS``,
``WAYBILL_INBOX_RETENTION_SECONDS``), paid for by an operator's search rather than by an
index that every message would have to write.
"""

from __future__ import annotations

import logging
import re
import statistics
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.db.models.fields.json import KT
from django.db.models.functions import TruncMinute
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from kombu import Connection

from . import bus, contexts, opsreport
from .models import DeadLetterBase, InboxMessageBase, OutboxMessageBase

log = logging.getLogger(__name__)

FLOW_MESSAGES_LIMIT = 500  # messages shown of one flow
FLOW_CORRELATIONS_LIMIT = 20  # flows merged for one search (an order: its placing, its cancel)
GROUP_LETTERS_LIMIT = 500  # dead letters listed (and acted on at once) per group and consumer
LATENCY_SAMPLE = 200  # applied messages a consumer's latency is measured over
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


# --- what contexts add to a flow ---------------------------------------------------------
@dataclass(frozen=True)
class FlowNote:
    """Something a context did about a message of a flow that no inbox says: a saga's step,
    a webhook's delivery. ``message_id`` is the message it is about (sent or handled)."""

    message_id: uuid.UUID
    context: str
    what: str
    at: datetime | None
    status: str = ""
    attempts: int | None = None
    error: str = ""
    url: str = ""


NoteSource = Callable[[set[uuid.UUID]], Iterable[FlowNote]]
_note_sources: dict[str, NoteSource] = {}


def flow_notes(context_name: str) -> Callable[[NoteSource], NoteSource]:
    """Register what ``context_name`` adds to a flow: a function from the flow's message ids
    to its notes about them. From the context's admin module (where the console runs)."""

    def register(source: NoteSource) -> NoteSource:
        _note_sources[context_name] = source
        return source

    return register


@dataclass(frozen=True)
class ConsoleLink:
    title: str
    url_name: str  # an admin URL name, e.g. "admin:orders_ordersaga_board"


console_links: list[ConsoleLink] = []


def console_link(title: str, url_name: str) -> None:
    """Add a context's own operations page (the order saga's board) to the console's
    navigation. From the context's admin module."""
    if all(link.url_name != url_name for link in console_links):
        console_links.append(ConsoleLink(title, url_name))


# --- one flow ------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One consumer's handling of a message, from its inbox (or its dead letters)."""

    consumer: str
    status: str  # processed, retrying, dead
    attempts: int
    received_at: datetime | None
    applied_at: datetime | None
    error: str = ""
    processed_by: str = ""
    next_attempt_at: datetime | None = None
    url: str = ""


@dataclass
class Hop:
    """One message of a flow, as its producer's outbox and its consumers' inboxes saw it."""

    message_id: uuid.UUID
    type: str
    version: int | None
    aggregate_id: str
    aggregate_version: int | None
    correlation_id: str
    causation_id: str | None
    traceparent: str | None
    occurred_at: datetime | None
    producer: str = ""
    kind: str = ""
    committed_at: datetime | None = None
    published_at: datetime | None = None
    publish_attempts: int = 0
    publish_error: str = ""
    skipped_at: datetime | None = None
    parked: bool = False
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    notes: list[FlowNote] = field(default_factory=list)
    children: list[Hop] = field(default_factory=list)
    depth: int = 0
    after_cause: timedelta | None = None  # committed after its cause was committed

    @property
    def trace_id(self) -> str | None:
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 else None

    @property
    def status(self) -> str:
        if self.skipped_at:
            return "skipped"
        if self.parked:
            return "parked"
        if self.producer and self.published_at is None:
            return "unsent"
        if any(d.status == InboxMessageBase.Status.DEAD for d in self.deliveries) or self.dead_letters:
            return "dead-lettered"
        if any(d.status == InboxMessageBase.Status.RETRYING for d in self.deliveries):
            return "retrying"
        return "published" if self.deliveries or self.producer else "seen"


@dataclass
class DeadLetterRow:
    consumer: str
    id: int
    message_id: uuid.UUID | None
    message_type: str
    reason: str
    reason_kind: str
    error_type: str
    fingerprint: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    discarded_at: datetime | None
    url: str = ""
    routing_key: str = ""
    aggregate_id: str = ""
    aggregate_version: int | None = None

    @property
    def is_open(self) -> bool:
        return self.replayed_at is None and self.discarded_at is None


@dataclass
class Flow:
    term: str
    correlation_ids: list[str]
    hops: list[Hop]  # every hop, in tree order (a hop's causes before it), with its depth
    truncated: bool = False

    @property
    def trace_ids(self) -> list[str]:
        return sorted({h.trace_id for h in self.hops if h.trace_id})


def trace_url(trace_id: str) -> str:
    """The trace in the tracing back end, when ``WAYBILL_TRACE_URL_TEMPLATE`` says where."""
    template = settings.WAYBILL_TRACE_URL_TEMPLATE
    return template.replace("{trace_id}", quote(trace_id)) if template else ""


def flow(term: str) -> Flow:
    """The flows ``term`` names: a message id, an order (any aggregate) id, a correlation
    id or a trace id. Every message with one of their correlation ids, in causation order."""
    term = term.strip()
    correlations = _correlations_for(term)
    hops = _hops(correlations) if correlations else {}
    truncated = len(hops) >= FLOW_MESSAGES_LIMIT
    _attach_notes(hops)
    roots: list[Hop] = []
    for hop in hops.values():
        parent = hops.get(uuid.UUID(hop.causation_id)) if _is_uuid(hop.causation_id) else None
        if parent is None:
            roots.append(hop)
        else:
            parent.children.append(hop)
            if hop.committed_at and parent.committed_at:
                hop.after_cause = hop.committed_at - parent.committed_at
    order = _in_time
    roots.sort(key=order)
    ordered: list[Hop] = []

    def walk(hop: Hop, depth: int) -> None:
        hop.depth = depth
        ordered.append(hop)
        for child in sorted(hop.children, key=order):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return Flow(term=term, correlation_ids=sorted({hop.correlation_id for hop in ordered}), hops=ordered,
                truncated=truncated)


def _in_time(hop: Hop):
    return (hop.occurred_at or hop.committed_at or timezone.now(), str(hop.message_id))


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _outboxes() -> list[contexts.BoundedContext]:
    """One registration per outbox (a bulkhead consumer shares its context's)."""
    return [ctx for ctx in contexts.all_contexts() if ctx.relay]


def _consumers() -> list[contexts.BoundedContext]:
    return [ctx for ctx in contexts.all_contexts() if ctx.handlers]


def _correlations_for(term: str) -> set[str]:
    found: dict[str, None] = {}  # in the order found: each query asks for the newest first
    if not term:
        return set()

    def take(rows) -> None:
        for envelope in rows:
            if isinstance(envelope, dict) and envelope.get("correlation_id"):
                found.setdefault(str(envelope["correlation_id"]), None)

    if TRACE_ID.match(term.lower()):  # 32 hex digits: a trace id (a UUID is written with dashes)
        for ctx in _outboxes():
            take(ctx.outbox.objects.using(ctx.database).alias(traceparent=KT("envelope__traceparent"))
                 .filter(traceparent__contains=f"-{term.lower()}-").order_by("-id")
                 .values_list("envelope", flat=True)[:FLOW_MESSAGES_LIMIT])
    elif _is_uuid(term):
        term = str(uuid.UUID(term))
        for ctx in _outboxes():
            rows = ctx.outbox.objects.using(ctx.database)
            take(rows.filter(message_id=term).values_list("envelope", flat=True))
            # An order (or any aggregate) id: the flows that changed it, newest first.
            take(rows.filter(aggregate_id=term).order_by("-id").values_list("envelope", flat=True)
                 [:FLOW_CORRELATIONS_LIMIT])
        for ctx in _consumers():
            take(ctx.inbox.objects.using(ctx.database).filter(message_id=term).values_list("envelope", flat=True))
            take(ctx.dead_letters.objects.using(ctx.database).filter(message_id=term)
                 .values_list("envelope", flat=True))
        found.setdefault(term, None)  # a correlation id itself
    else:  # another aggregate's key, e.g. a product's SKU: its latest flows
        for ctx in _outboxes():
            take(ctx.outbox.objects.using(ctx.database).filter(aggregate_id=term).order_by("-id")
                 .values_list("envelope", flat=True)[:FLOW_CORRELATIONS_LIMIT])
    return set(list(found)[:FLOW_CORRELATIONS_LIMIT])


def _hop_of(envelope: dict) -> Hop | None:
    message_id = envelope.get("id")
    if not _is_uuid(message_id):
        return None
    occurred = envelope.get("occurred_at")
    return Hop(
        message_id=uuid.UUID(str(message_id)), type=str(envelope.get("type", "")),
        version=envelope.get("schema_version"), aggregate_id=str(envelope.get("aggregate_id", "")),
        aggregate_version=envelope.get("aggregate_version"), correlation_id=str(envelope.get("correlation_id", "")),
        causation_id=str(envelope["causation_id"]) if envelope.get("causation_id") else None,
        traceparent=envelope.get("traceparent"),
        occurred_at=parse_datetime(occurred) if isinstance(occurred, str) else None,
    )


def _hops(correlations: set[str]) -> dict[uuid.UUID, Hop]:
    hops: dict[uuid.UUID, Hop] = {}
    wanted = sorted(correlations)

    def hop_for(envelope: dict) -> Hop | None:
        hop = _hop_of(envelope) if isinstance(envelope, dict) else None
        if hop is None:
            return None
        return hops.setdefault(hop.message_id, hop)

    for ctx in _outboxes():
        rows = (ctx.outbox.objects.using(ctx.database).filter(envelope__correlation_id__in=wanted)
                .order_by("id")[:FLOW_MESSAGES_LIMIT])
        for row in rows:
            if (hop := hop_for(row.envelope)) is not None:
                _as_its_outbox_has_it(hop, ctx, row)
    for ctx in _consumers():
        inbox = (ctx.inbox.objects.using(ctx.database).filter(envelope__correlation_id__in=wanted)
                 .order_by("received_at")[:FLOW_MESSAGES_LIMIT])
        for row in inbox:
            hop = hop_for(row.envelope)
            if hop is None:
                continue
            hop.deliveries.append(Delivery(
                consumer=ctx.name, status=row.status, attempts=row.attempts, received_at=row.received_at,
                applied_at=row.processed_at, error=row.last_error, processed_by=row.processed_by,
                next_attempt_at=row.next_attempt_at, url=admin_url(row)))
        letters = (ctx.dead_letters.objects.using(ctx.database).filter(envelope__correlation_id__in=wanted)
                   .defer("body", "preview", "traceback").order_by("created_at")[:FLOW_MESSAGES_LIMIT])
        for letter in letters:
            hop = hop_for(letter.envelope)
            if hop is not None:
                hop.dead_letters.append(_dead_letter_row(ctx, letter))
    return hops


def _as_its_outbox_has_it(hop: Hop, ctx: contexts.BoundedContext, row: OutboxMessageBase) -> None:
    """What the producer's outbox row says of a message: who, when, and how its publishing went."""
    hop.producer, hop.kind = ctx.name, row.kind
    hop.committed_at, hop.published_at = row.created_at, row.first_sent_at or row.sent_at
    hop.publish_attempts, hop.publish_error, hop.skipped_at = row.publish_attempts, row.last_error, row.skipped_at
    hop.parked = row.sent_at is None and row.publish_attempts >= settings.WAYBILL_RELAY_MAX_ATTEMPTS
    hop.url = admin_url(row)


def _attach_notes(hops: dict[uuid.UUID, Hop]) -> None:
    if not hops:
        return
    ids = set(hops)
    for name, source in _note_sources.items():
        try:
            notes = list(source(ids))
        except Exception:  # noqa: BLE001 - one context's notes failing must not hide the flow
            log.exception("the console could not read %s's notes on a flow", name)
            continue
        for note in notes:
            if note.message_id in hops:
                hops[note.message_id].notes.append(note)
    for hop in hops.values():
        hop.notes.sort(key=lambda n: n.at or timezone.now())


def cause_chain(envelope: dict | None) -> list[Hop]:
    """The message's causes, nearest first, back to the one recorded by the request (or
    command) that started the flow: each found in its producer's outbox by id."""
    chain: list[Hop] = []
    seen: set[str] = set()
    cause = (envelope or {}).get("causation_id")
    while cause and _is_uuid(cause) and str(cause) not in seen and len(chain) < 50:
        seen.add(str(cause))
        found = None
        for ctx in _outboxes():
            row = ctx.outbox.objects.using(ctx.database).filter(message_id=cause).first()
            if row is not None:
                if (found := _hop_of(row.envelope)) is not None:
                    _as_its_outbox_has_it(found, ctx, row)
                break
        if found is None:
            chain.append(Hop(message_id=uuid.UUID(str(cause)), type="(no longer in any outbox)", version=None,
                             aggregate_id="", aggregate_version=None, correlation_id="", causation_id=None,
                             traceparent=None, occurred_at=None))
            break
        chain.append(found)
        cause = found.causation_id
    return chain


# --- dead letters, grouped by cause --------------------------------------------------------
@dataclass
class DeadLetterGroup:
    fingerprint: str
    reason_kind: str
    error_type: str
    message_type: str
    reason: str  # one of its dead letters' reason, as written
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    consumers: dict[str, int] = field(default_factory=dict)


def _dead_letter_models() -> list[contexts.BoundedContext]:
    """The consumers, one per dead-letter table."""
    seen, result = set(), []
    for ctx in _consumers():
        if ctx.dead_letters not in seen:
            seen.add(ctx.dead_letters)
            result.append(ctx)
    return result


OPEN = Q(replayed_at__isnull=True, discarded_at__isnull=True)


def dead_letter_groups() -> list[DeadLetterGroup]:
    """The open dead letters of every consumer (neither replayed nor discarded), one group
    per fingerprint, the most recently seen first."""
    groups: dict[str, DeadLetterGroup] = {}
    for ctx in _dead_letter_models():
        rows = (ctx.dead_letters.objects.using(ctx.database).filter(OPEN)
                .values("fingerprint", "reason_kind", "error_type", "message_type")
                .annotate(count=Count("id"), first=Min("created_at"), last=Max("created_at"), sample=Max("id"))
                .order_by())
        for row in rows:
            group = groups.get(row["fingerprint"])
            if group is None:
                reason = ctx.dead_letters.objects.using(ctx.database).filter(pk=row["sample"]) \
                    .values_list("reason", flat=True).first() or ""
                group = groups[row["fingerprint"]] = DeadLetterGroup(
                    fingerprint=row["fingerprint"], reason_kind=row["reason_kind"], error_type=row["error_type"],
                    message_type=row["message_type"], reason=reason)
            group.count += row["count"]
            group.consumers[ctx.name] = group.consumers.get(ctx.name, 0) + row["count"]
            group.first_seen = min(filter(None, (group.first_seen, row["first"])))
            group.last_seen = max(filter(None, (group.last_seen, row["last"])))
    return sorted(groups.values(), key=lambda g: g.last_seen or timezone.now(), reverse=True)


def dead_letter_group(fingerprint: str) -> tuple[DeadLetterGroup | None, list[DeadLetterRow]]:
    group = next((g for g in dead_letter_groups() if g.fingerprint == fingerprint), None)
    return group, open_dead_letters(fingerprint)


def open_dead_letters(fingerprint: str) -> list[DeadLetterRow]:
    letters: list[DeadLetterRow] = []
    for ctx in _dead_letter_models():
        rows = (ctx.dead_letters.objects.using(ctx.database).filter(OPEN, fingerprint=fingerprint)
                .defer("body", "preview", "traceback").order_by("created_at")[:GROUP_LETTERS_LIMIT])
        letters += [_dead_letter_row(ctx, row) for row in rows]
    return sorted(letters, key=lambda letter: letter.created_at)


def _dead_letter_row(ctx: contexts.BoundedContext, letter: DeadLetterBase) -> DeadLetterRow:
    envelope = letter.envelope if isinstance(letter.envelope, dict) else {}
    version = envelope.get("aggregate_version")
    return DeadLetterRow(
        consumer=ctx.name, id=letter.pk, message_id=letter.message_id, message_type=letter.message_type,
        reason=letter.reason, reason_kind=letter.reason_kind, error_type=letter.error_type,
        fingerprint=letter.fingerprint, attempts=letter.attempts, created_at=letter.created_at,
        replayed_at=letter.replayed_at, discarded_at=letter.discarded_at, url=admin_url(letter),
        routing_key=letter.routing_key, aggregate_id=str(envelope.get("aggregate_id", "")),
        aggregate_version=version if isinstance(version, int) else None,
    )


def dead_letter(consumer: str, letter_id: int) -> tuple[contexts.BoundedContext, DeadLetterBase] | None:
    ctx = next((c for c in _dead_letter_models() if c.name == consumer), None)
    if ctx is None:
        return None
    letter = ctx.dead_letters.objects.using(ctx.database).filter(pk=letter_id).first()
    return (ctx, letter) if letter is not None else None


def dead_letter_rows(letters: list[DeadLetterRow]) -> list[DeadLetterBase]:
    """The rows themselves, from each consumer's table, in the order given."""
    wanted: dict[str, list[int]] = defaultdict(list)
    for letter in letters:
        wanted[letter.consumer].append(letter.id)
    found: dict[tuple[str, int], DeadLetterBase] = {}
    for ctx in _dead_letter_models():
        if ids := wanted.get(ctx.name):
            found.update({(ctx.name, row.pk): row
                          for row in ctx.dead_letters.objects.using(ctx.database).filter(pk__in=ids)})
    return [found[key] for key in ((letter.consumer, letter.id) for letter in letters) if key in found]


def as_dead_letter_rows(ctx: contexts.BoundedContext, letters: Iterable[DeadLetterBase]) -> list[DeadLetterRow]:
    return [_dead_letter_row(ctx, letter) for letter in letters]


def out_of_order(letters: list[DeadLetterRow]) -> dict[tuple[str, int], str]:
    """The dead letters whose redrive would apply a message after a later one of its
    aggregate: their consumer already applied a message that its producer's outbox committed
    later for the same aggregate. "Later" is the relay's order (the outbox row's id within
    one outbox and aggregate), not the version: one aggregate's messages may count different
    versions (an order's saga and the order itself). A message no outbox holds any more is
    compared by version with the applied ones of its own type. (consumer, id) -> why."""
    flagged: dict[tuple[str, int], str] = {}
    by_consumer: dict[str, list[DeadLetterRow]] = defaultdict(list)
    for letter in letters:
        if letter.aggregate_id and letter.message_id:
            by_consumer[letter.consumer].append(letter)
    for ctx in _consumers():
        mine = by_consumer.get(ctx.name)
        if not mine:
            continue
        applied = list(ctx.inbox.objects.using(ctx.database)
                       .filter(status=InboxMessageBase.Status.PROCESSED,
                               envelope__aggregate_id__in=sorted({letter.aggregate_id for letter in mine}))
                       .values_list("message_id", "message_type", "envelope__aggregate_id",
                                    "envelope__aggregate_version"))
        positions = _outbox_positions([letter.message_id for letter in mine] + [row[0] for row in applied])
        for letter in mine:
            here = positions.get(letter.message_id)
            for message_id, message_type, aggregate_id, version in applied:
                if str(aggregate_id) != letter.aggregate_id:
                    continue
                there = positions.get(message_id)
                if here and there:
                    later = there[0] == here[0] and there[1] > here[1]
                else:
                    later = (message_type == letter.message_type and isinstance(version, int)
                             and letter.aggregate_version is not None and version > letter.aggregate_version)
                if later:
                    flagged[(letter.consumer, letter.id)] = (
                        f"{ctx.name} already applied {message_type} v{version} of {letter.aggregate_id}, "
                        f"committed after this one")
                    break
    return flagged


def _outbox_positions(message_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, int]]:
    """Where each message sits in its producer's outbox: (context, row id), through the
    outboxes' unique index on the message id."""
    positions: dict[uuid.UUID, tuple[str, int]] = {}
    wanted = sorted({str(m) for m in message_ids if m})
    for ctx in _outboxes():
        for start in range(0, len(wanted), 500):
            rows = ctx.outbox.objects.using(ctx.database).filter(message_id__in=wanted[start:start + 500])
            for message_id, row_id in rows.values_list("message_id", "id"):
                positions[message_id] = (ctx.name, row_id)
    return positions


def in_redrive_order(letters: list[DeadLetterRow]) -> list[DeadLetterRow]:
    """Letters in the order their messages were committed (per outbox and aggregate), so a
    redrive of one aggregate's messages retries them in that order."""
    positions = _outbox_positions([letter.message_id for letter in letters])
    return sorted(letters, key=lambda letter: (positions.get(letter.message_id, ("", 0)),
                                               letter.aggregate_version or 0, letter.created_at))


# --- outbox health -------------------------------------------------------------------------
@dataclass
class BlockedKey:
    """An aggregate with a parked row: its other unsent rows wait (``waiting``)."""

    context: str
    aggregate_id: str
    row_id: int
    message_id: uuid.UUID
    message_type: str
    since: datetime
    waiting: int
    attempts: int
    last_error: str
    correlation_id: str
    url: str = ""


@dataclass
class OutboxHealth:
    context: str
    backlog: int
    parked: int
    failing: int
    oldest_unsent_age: timedelta | None
    published_per_minute: list[tuple[datetime, int]]
    blocked: list[BlockedKey]
    error: str = ""

    @property
    def bars(self) -> list[tuple[datetime, int, int]]:
        """Each minute's count with a bar height of at most 24 px, for a sparkline."""
        top = max((count for _, count in self.published_per_minute), default=0) or 1
        return [(minute, count, round(24 * count / top)) for minute, count in self.published_per_minute]

    @property
    def publish_rate(self) -> float:
        """Messages per second over the minutes shown."""
        minutes = len(self.published_per_minute) or 1
        return sum(count for _, count in self.published_per_minute) / (60.0 * minutes)


RATE_MINUTES = 10


def outbox_health() -> list[OutboxHealth]:
    result = []
    for ctx in _outboxes():
        try:
            result.append(_outbox_health(ctx))
        except Exception as exc:  # noqa: BLE001 - a database that is down is shown as such
            log.warning("the console could not read %s's outbox", ctx.name, exc_info=True)
            result.append(OutboxHealth(ctx.name, 0, 0, 0, None, [], [], error=f"{type(exc).__name__}: {exc}"))
    return result


def _outbox_health(ctx: contexts.BoundedContext) -> OutboxHealth:
    now = timezone.now()
    figures = opsreport.outbox_figures(ctx, now)  # what the metrics and the dashboard say too
    rows = ctx.outbox.objects.using(ctx.database)
    since = (now - timedelta(minutes=RATE_MINUTES)).replace(second=0, microsecond=0)
    counted = dict(rows.filter(first_sent_at__gte=since).annotate(minute=TruncMinute("first_sent_at"))
                   .values("minute").annotate(n=Count("id")).order_by().values_list("minute", "n"))
    minutes = [since + timedelta(minutes=i) for i in range(RATE_MINUTES + 1)]
    per_minute = [(minute, counted.get(minute, 0)) for minute in minutes if minute <= now]
    age = figures.oldest_pending_age_s
    return OutboxHealth(
        context=ctx.name, backlog=figures.pending, parked=figures.parked,
        failing=rows.filter(sent_at__isnull=True, publish_attempts__gt=0,
                            publish_attempts__lt=settings.WAYBILL_RELAY_MAX_ATTEMPTS).count(),
        oldest_unsent_age=timedelta(seconds=age) if age is not None else None, published_per_minute=per_minute,
        blocked=blocked_keys(ctx))


def blocked_keys(ctx: contexts.BoundedContext) -> list[BlockedKey]:
    """The aggregates the relay holds back: as ``Relay.publish_batch`` has it, every unsent row
    of an aggregate waits while any unsent row of it is parked. One key per aggregate, named
    by its first parked row (the one to republish or skip)."""
    rows = ctx.outbox.objects.using(ctx.database)
    unsent = rows.filter(sent_at__isnull=True)
    # Through the index of failing rows (``outbox_failing``): parked rows are among them.
    parked = unsent.filter(publish_attempts__gte=settings.WAYBILL_RELAY_MAX_ATTEMPTS).order_by("id")
    blockers: dict[str, OutboxMessageBase] = {}
    for row in parked.defer("envelope")[:200]:
        blockers.setdefault(row.aggregate_id, row)
    keys = []
    for aggregate_id, blocker in blockers.items():
        envelope = rows.filter(pk=blocker.pk).values_list("envelope", flat=True).first() or {}
        keys.append(BlockedKey(
            context=ctx.name, aggregate_id=aggregate_id, row_id=blocker.id, message_id=blocker.message_id,
            message_type=blocker.message_type, since=blocker.created_at,
            waiting=unsent.filter(aggregate_id=aggregate_id).exclude(id=blocker.id).count(),
            attempts=blocker.publish_attempts, last_error=blocker.last_error,
            correlation_id=str(envelope.get("correlation_id", "")), url=admin_url(blocker)))
    return keys


# --- consumers -------------------------------------------------------------------------------
@dataclass
class QueueFigures:
    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    source: str  # where the figures come from
    error: str = ""


@dataclass
class ConsumerHealth:
    consumer: str
    queues: list[QueueFigures]
    retrying: int
    retries_due: int
    dead_letters: int
    applied_last_minute: int
    latency_p50: float | None  # seconds from occurred to applied, over the last applied messages
    latency_p95: float | None
    error: str = ""


def consumer_health() -> list[ConsumerHealth]:
    figures = queue_figures([bus.queue_name(ctx.name, p) for ctx in _consumers() for p in bus.partitions()])
    result = []
    for ctx in _consumers():
        queues = [figures[bus.queue_name(ctx.name, p)] for p in bus.partitions()]
        try:
            result.append(_consumer_health(ctx, queues))
        except Exception as exc:  # noqa: BLE001 - a database that is down is shown as such
            log.warning("the console could not read %s's inbox", ctx.name, exc_info=True)
            result.append(ConsumerHealth(ctx.name, queues, 0, 0, 0, 0, None, None, error=f"{type(exc).__name__}: {exc}"))
    return result


def _consumer_health(ctx: contexts.BoundedContext, queues: list[QueueFigures]) -> ConsumerHealth:
    now = timezone.now()
    inbox = ctx.inbox.objects.using(ctx.database)
    Status = InboxMessageBase.Status
    retrying = inbox.filter(status=Status.RETRYING)
    recent = list(inbox.filter(status=Status.PROCESSED, processed_at__isnull=False).order_by("-received_at")
                  .values_list("processed_at", "envelope__occurred_at")[:LATENCY_SAMPLE])
    delays = []
    for applied_at, occurred in recent:
        occurred_at = parse_datetime(occurred) if isinstance(occurred, str) else None
        if occurred_at is not None:
            delays.append(max((applied_at - occurred_at).total_seconds(), 0.0))
    p50 = statistics.median(delays) if delays else None
    p95 = statistics.quantiles(delays, n=20)[-1] if len(delays) >= 2 else (delays[0] if delays else None)
    return ConsumerHealth(
        consumer=ctx.name, queues=queues, retrying=retrying.count(),
        retries_due=retrying.filter(next_attempt_at__lte=now).count(),
        dead_letters=ctx.dead_letters.objects.using(ctx.database).filter(OPEN).count(),
        applied_last_minute=inbox.filter(status=Status.PROCESSED, processed_at__gte=now - timedelta(minutes=1)).count(),
        latency_p50=p50, latency_p95=p95)


def queue_figures(names: list[str]) -> dict[str, QueueFigures]:
    """Messages ready and unacknowledged and consumers attached, per queue: from RabbitMQ's
    management API when ``WAYBILL_BROKER_MANAGEMENT_URL`` is set (the only place that
    counts unacknowledged messages), else from the broker's answer to a passive declare
    (ready and consumers); on the in-memory transport, the consumers are this process's."""
    if settings.WAYBILL_BROKER_MANAGEMENT_URL:
        return _management_figures(names)
    return _declared_figures(names)


def _management_figures(names: list[str]) -> dict[str, QueueFigures]:
    vhost = quote(Connection(settings.WAYBILL_BROKER_URL).virtual_host or "/", safe="")
    source = "management API"
    reason = "no management API answered"
    # A cluster's nodes, ";"-separated as in the broker's URL: each answers for the whole
    # cluster, so the first that answers is asked.
    for url in filter(None, settings.WAYBILL_BROKER_MANAGEMENT_URL.split(";")):
        # The credentials go as basic auth, never in the URL: an error's text (shown to
        # whoever may look) would carry the URL, password and all.
        parts = urlsplit(url)
        base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                           parts.path.rstrip("/"), "", ""))
        auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        try:
            with httpx.Client(timeout=5, auth=auth) as client:
                answer = client.get(f"{base}/api/queues/{vhost}",
                                    params={"columns": "name,messages_ready,messages_unacknowledged,consumers"})
            if answer.status_code != 200:
                raise ValueError(f"the management API answered {answer.status_code}")
            known = {q["name"]: q for q in answer.json()}
            break
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("the console could not read the broker's management API at %s: %s", base, type(exc).__name__)
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__} (see the log)"
    else:
        return {name: QueueFigures(name, None, None, None, source, error=reason) for name in names}
    result = {}
    for name in names:
        queue = known.get(name)
        result[name] = QueueFigures(
            name, queue.get("messages_ready"), queue.get("messages_unacknowledged"), queue.get("consumers"),
            source) if queue else QueueFigures(name, None, None, None, source, error="no such queue")
    return result


def _declared_figures(names: list[str]) -> dict[str, QueueFigures]:
    memory = settings.WAYBILL_BROKER_URL.startswith("memory://")
    source = "in-memory transport" if memory else "broker (passive declare)"
    result = {}
    try:
        with bus.connect() as connection:
            for name in names:
                try:
                    channel = connection.channel()
                    try:
                        declared = channel.queue_declare(queue=name, passive=True)
                    finally:
                        channel.close()
                except Exception as exc:  # noqa: BLE001 - a missing queue closes only its channel
                    result[name] = QueueFigures(name, None, None, None, source, error=f"{type(exc).__name__}: {exc}")
                    continue
                consumers = _threads_consuming(name) if memory else declared.consumer_count
                result[name] = QueueFigures(name, declared.message_count, None, consumers, source)
    except Exception as exc:  # noqa: BLE001 - the broker being down is what the page then says
        for name in names:
            result.setdefault(name, QueueFigures(name, None, None, None, source, error=f"{type(exc).__name__}: {exc}"))
    return result


def _threads_consuming(queue: str) -> int:
    # The in-memory transport has no consumers to count: embedded, they are this process's
    # consumer threads (``waybill.runtime``), named after their queue.
    return sum(1 for thread in threading.enumerate() if thread.name == f"consumer-{queue}" and thread.is_alive())


# --- links ---------------------------------------------------------------------------------
def admin_url(row) -> str:
    opts = row._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk])
    except NoReverseMatch:
        return ""
