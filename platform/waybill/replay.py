"""Replaying the event history (``waybill.history``) into a consumer's handlers: a rebuild
fills fresh tables with it (``waybill.rebuild``), a rewind applies it again to the live ones
from a time or a position (``manage.py rewind``).

A replay is not the live consumer, and differs from it on purpose:

- **Only replay-safe handlers** (``contexts.replay_safe``): a replay of a type whose handler
  has not said so is refused before the first message (``ReplayRefused``).
- **Side effects are off by construction** while its handlers run (``replaying()``): the
  outbox refuses to record (no message leaves, so no webhook and no payment call follows),
  channel pushes are refused, and the read side's change log records nothing.
- **Its position is stored with its effects**: one transaction per batch of the history
  applies the batch, records the ids it applied in the database's inbox, and writes the
  position reached (``ReplayPositionBase``), so a replay killed at any point goes on from its
  last commit and applies nothing twice (the history holds a message twice when the relay
  published it twice; the inbox drops the second).
- **Cheaper per message**: no broker acks, no per-message transaction; a ``Batched``
  handler gets the batch's runs through ``many``.

A message a handler refuses on replay (it raises) is kept in the inbox as dead, with its
error, and the replay goes on, as the live consumer dead-letters it and goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from .batchend import batch_end
from .consumer import read_message
from .contexts import Batched, BatchItem, BoundedContext, Handler, may_replay
from .history import FIRST, Recorded, Start, history
from .messages import Envelope, Message, MessageRefused
from .models import InboxMessageBase
from .replaymode import SideEffectWhileReplaying, side_effects_off

log = logging.getLogger(__name__)

Status = InboxMessageBase.Status


class ReplayRefused(Exception):
    """This replay may not run: a handler has not said it may, or nothing keeps positions."""


@dataclass
class Progress:
    """How far a replay is: history messages read, and of its types applied and refused."""

    read: int = 0
    applied: int = 0
    refused: int = 0
    position: dict | None = None
    refusals: list[str] = field(default_factory=list)  # the first few, for the operator


@dataclass(frozen=True)
class _Ready:
    envelope: Envelope
    payload: Message
    handler: Handler


class Replay:
    """The history replayed into ``context``'s handlers of ``types`` (all it consumes by
    default), in the database the context's alias points to in this thread (a rebuild
    points it at green tables, see ``waybill.rebuild``). ``name`` keys its position."""

    def __init__(self, context: BoundedContext, *, name: str, types: Iterable[str] | None = None,
                 inbox: bool = True):
        self.context, self.name = context, name
        # A rebuild's tables have an inbox of their own: what it applied is recorded there
        # and never applied again. A rewind applies again what the live inbox has (that is
        # its point), so it keeps no ids: its handlers are replay-safe, a repeat changes nothing.
        self.inbox = inbox
        self.types = set(types) if types is not None else context.consumed_events
        refused = sorted(message_type for message_type in self.types
                         if not may_replay(context.handler_for(message_type)[0]))
        if refused:
            raise ReplayRefused(f"{context.name} may not replay {', '.join(refused)}: their handlers have not said "
                                f"they may run on replay (waybill.api.replay_safe)")
        if context.replay_positions is None:
            raise ReplayRefused(f"{context.name} keeps no replay positions: declare its projections in its manifest")
        self.progress = Progress()

    @property
    def _positions(self):
        return self.context.replay_positions.objects.using(self.context.database)

    def stored_position(self) -> dict | None:
        """Where this replay's last commit left it (None: it has not applied a batch), and
        the counts it had reached go on from theirs."""
        row = self._positions.filter(name=self.name).first()
        if row is None:
            return None
        self.progress.applied, self.progress.refused = row.applied, row.refused
        return row.position

    def forget(self) -> None:
        """Start again from scratch next time (a rewind to a new start)."""
        self._positions.filter(name=self.name).delete()

    def run(self, start: Start = FIRST, *, on_batch: Callable[[Progress], None] | None = None,
            stop: threading.Event | None = None,
            applying: Callable[[], AbstractContextManager] = contextlib.nullcontext) -> Progress:
        """Apply the history from where this replay stopped (or from ``start`` if it never
        ran) until it has caught up; ``on_batch`` after each commit; ``stop`` ends it
        between batches. ``applying()`` is entered around each batch's transaction and the
        read of the position, not around the reads of the history (a rebuild points the
        context's database at its green tables there, and the embedded history is read from
        the live outboxes)."""
        with applying():
            stored = self.stored_position()
        for batch in history().read(stored if stored is not None else start):
            with applying():
                self.apply(batch)
            if on_batch:
                on_batch(self.progress)
            if stop is not None and stop.is_set():
                break
        return self.progress

    def apply(self, batch: list[Recorded]) -> None:
        """One batch of the history, in one transaction with its position."""
        ready = [item for item in map(self._read, (recorded.received.body for recorded in batch)) if item]
        # Off until after the commit: what a handler left for on_commit is refused too.
        with side_effects_off(), transaction.atomic(using=self.context.database):
            self._apply(ready)
            position = batch[-1].position
            self._positions.update_or_create(name=self.name, defaults={
                "position": position, "applied": self.progress.applied, "refused": self.progress.refused,
                "updated_at": timezone.now()})
        self.progress.read += len(batch)
        self.progress.position = position

    def apply_published(self, envelopes: list[dict]) -> int:
        """Messages as published (an inbox's envelopes), outside the history's order, and
        without moving the position: what a rebuild takes from the live inbox at its switch.
        Returns how many it applied (those not applied before)."""
        before = self.progress.applied
        ready = [item for item in (self._read(Envelope.model_validate(envelope).to_json()) for envelope in envelopes)
                 if item]
        with side_effects_off(), transaction.atomic(using=self.context.database):
            self._apply(ready)
        return self.progress.applied - before

    def _read(self, body: bytes | str) -> _Ready | None:
        """A message of this replay's types, as its handler reads it; None for anything else."""
        try:
            envelope, payload, handler = read_message(self.context, body)
        except MessageRefused as refused:
            # Not one of ours to judge unless it names one of our types: the history also
            # holds what other consumers read (and the isolation tests' probes).
            if (refused.envelope or {}).get("type") in self.types:
                self._refused(f"{refused.envelope.get('id')}: {refused.reason}")
            return None
        if envelope.type not in self.types or handler is None:
            return None
        return _Ready(envelope, payload, handler)

    def _apply(self, ready: list[_Ready]) -> None:
        db = self.context.database
        inbox = self.context.inbox.objects.using(db)
        known = set(inbox.filter(message_id__in={item.envelope.id for item in ready}).values_list(
            "message_id", flat=True)) if self.inbox else set()
        fresh, seen = [], set()
        for item in ready:
            if item.envelope.id not in known and item.envelope.id not in seen:
                seen.add(item.envelope.id)
                fresh.append(item)
        rows = []
        with batch_end(using=db) as end:
            for run in _runs(fresh):
                if len(run) > 1 and isinstance(run[0].handler, Batched) and self._applied_together(run):
                    rows.extend(self._inbox_row(item, Status.PROCESSED) for item in run)
                    continue
                for item in run:
                    try:
                        with transaction.atomic(using=db):
                            item.handler(item.envelope, item.payload)
                    except SideEffectWhileReplaying:
                        raise  # the handler broke its promise: the replay stops, nothing of the batch stays
                    except Exception as error:  # noqa: BLE001 - the handler refused it: kept as dead, go on
                        self._refused(f"{item.envelope.type} {item.envelope.id}: {type(error).__name__}: {error}")
                        rows.append(self._inbox_row(item, Status.DEAD, error=f"{type(error).__name__}: {error}"))
                        continue
                    rows.append(self._inbox_row(item, Status.PROCESSED))
            end.run()
        if self.inbox:
            inbox.bulk_create(rows)
        self.progress.applied += sum(row.status == Status.PROCESSED for row in rows)

    def _applied_together(self, run: list[_Ready]) -> bool:
        items = [BatchItem(item.envelope, item.payload, handling=contextlib.nullcontext) for item in run]
        try:
            with transaction.atomic(using=self.context.database):
                run[0].handler.many(items)
        except SideEffectWhileReplaying:
            raise
        except Exception as error:  # noqa: BLE001 - each is applied alone next, as the consumer does
            log.warning("%s replay: a run of %d failed together (%r); applying them one at a time",
                        self.context.name, len(run), error)
            return False
        return True

    def _inbox_row(self, item: _Ready, status: str, *, error: str = "") -> InboxMessageBase:
        now = timezone.now()
        return self.context.inbox(
            message_id=item.envelope.id, message_type=item.envelope.type, status=status, attempts=1,
            envelope=item.envelope.as_published.model_dump(mode="json"), processed_at=now, last_error=error[:2000],
            processed_by=f"replay {self.name} {socket.gethostname()}:{os.getpid()}")

    def _refused(self, what: str) -> None:
        self.progress.refused += 1
        if len(self.progress.refusals) < 20:
            self.progress.refusals.append(what)
        log.warning("%s replay %s refused %s", self.context.name, self.name, what)


def _runs(items: list[_Ready]) -> Iterator[list[_Ready]]:
    """Consecutive messages with one handler: what a ``Batched`` handler's ``many`` takes."""
    run: list[_Ready] = []
    for item in items:
        if run and item.handler is not run[0].handler:
            yield run
            run = []
        run.append(item)
    if run:
        yield run

