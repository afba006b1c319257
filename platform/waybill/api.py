"""The kernel's public face: everything a bounded context's code may use, in one place.

A context imports the kernel through this module, plus three that must stay importable
without Django and so cannot come through here:

- ``waybill.messages``: the message grammar its ``contracts`` are written in;
- ``waybill.manifest``: the vocabulary of its ``manifest``;
- ``waybill.models``: the abstract models of its outbox, inbox and dead letters (and the
  migration steps written once for them), which its ``models`` and migrations need while
  Django is still loading the apps.

The rest of the kernel (the consumer, the relay, the bus, the runtime, the scheduler) moves
a context's messages without the context calling it; an import-linter contract
(pyproject.toml) keeps contexts to this face.
"""

from . import jsonlimits
from .apifields import StrictCharField, single_valued
from .admin import DeadLetterAdmin, InboxAdmin, OutboxAdmin, ReadOnlyAdmin, RebuildAdmin
from .backoff import backoff_delay
from .batchend import at_batch_end, gathered_at_batch_end
from .bus import bindings_changed
from .contexts import Batched, BatchItem, ExternalCall, Handler, Projection, replay_safe
from .consumer import PermanentFailure
from .memory import memory_release
from .messages import Envelope, Kind, Message, MessageRefused, message, parse
from .opsreport import OutboxMeasured, ProcessesSupervised
from .outbox import outbox_record
from .channelgroups import group_send
from .console import FlowNote, console_link, flow_notes
from .console_admin import flow_link, flow_url
from .rights import audit_record
from .replaymode import replaying

__all__ = [
    # Handlers: what they receive, and how they say a message can never succeed.
    "Envelope", "Message", "Kind", "message", "parse", "MessageRefused",
    "Handler", "ExternalCall", "PermanentFailure",
    # A handler that also applies a run of its messages at once (fewer statements each).
    "Batched", "BatchItem",
    # Replaying the event history: a handler says it may run on replay; read rows a
    # rebuild may build again (blue/green); whether this runs in a replay (no side effects).
    "replay_safe", "Projection", "replaying",
    # Services: messages recorded in the same transaction as the change; a write done
    # once per key at the end of the consumer's batch (with the last value left for the
    # key, or with every item gathered under it).
    "outbox_record", "at_batch_end", "gathered_at_batch_end",
    # ...and, for a consumer whose bindings are chosen at run time, word that they changed.
    "bindings_changed",
    # The kernel's own documents (the operations dashboard projects them).
    "OutboxMeasured", "ProcessesSupervised",
    # The live read side: a push to a channel group from synchronous code.
    "group_send",
    # What a context's admin builds on.
    "OutboxAdmin", "InboxAdmin", "DeadLetterAdmin", "ReadOnlyAdmin", "RebuildAdmin",
    # The operations console: what a context adds to a flow (a saga's steps, a webhook's
    # deliveries) and to its navigation, a link to a flow from any page, and the record of
    # an operator's act.
    "flow_notes", "FlowNote", "console_link", "flow_link", "flow_url", "audit_record",
    # Small tools: bounded JSON decoding, retry delays, giving memory back.
    "jsonlimits", "backoff_delay", "memory_release",
    # API input as the schema states it: a string field that takes a JSON string only, and
    # query parameters given once each.
    "StrictCharField", "single_valued",
]
