"""Server-Sent Events: the WebSocket streams (sockets.py) for clients that cannot hold a
WebSocket, at ``GET /api/v1/events/?stream=<name>``.

Same stream names and the same authorisation (``streams.authorise``); signed in by the
session cookie or an ``Authorization: Token <key>`` header (401 without, 403 for a stream
that is not the user's, 400 for a malformed request, 429 with ``Retry-After`` past the
live-connection limits shared with WebSockets, all JSON). The body is
``text/event-stream``::

    retry: 2000

    id: <position>
    event: snapshot                     (no Last-Event-ID / after, or the gap is too old)
    data: {"type": "snapshot", "stream": s, "position": p, "documents": [...]}

    id: <position>
    event: <kind>                       (order, catalog_item, ...: one change)
    data: {"type": "change", "stream": s, "position": p, "kind": k, "key": id, "version": v, "data": {...}}

    id: <position>
    event: subscribed                   (the catch-up is sent; live changes follow)
    data: {"type": "subscribed", "stream": s, "position": p}

    : keep-alive                        (a comment when nothing was sent for ~15 s)

The ``id`` is the stream position, so a reconnecting ``EventSource`` sends the last one as
``Last-Event-ID`` and is sent exactly the changes after it (or a snapshot). Clients that
cannot set that header pass ``?after=<position>``; the header wins when both are given.
A client must still ignore an event whose ``id`` is not above the last it applied.
(Everything above is the operation's description in the OpenAPI schema.)

The view is a DRF view for authentication, errors and the schema; it returns at once and
the events come from an async iterator on the event loop (served over ASGI), fed by a
channel of the channel layer that joined the stream's group before the catch-up was read.
When the client goes away Django cancels the iterator and the channel leaves the group.
"""

from __future__ import annotations

import asyncio
import json

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError, PermissionDenied, Throttled
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from waybill.api import single_valued

from . import changelog, connections, streams

RETRY_MILLISECONDS = 2000


def heartbeat_seconds() -> float:
    # Proxies close idle connections (nginx after proxy_read_timeout); a comment keeps it
    # busy and lets the server notice a client that is gone.
    return getattr(settings, "WAYBILL_SSE_HEARTBEAT_SECONDS", 15.0)


POSITION = {"type": "integer", "format": "int64", "minimum": 0, "maximum": streams.MAX_POSITION}
# One event of the stream, as a client's SSE parser hands it over (the `retry:` line and
# the keep-alive comments are no events).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^\d+$", "description": "The stream position"},
        "event": {"type": "string", "description": "`snapshot`, `subscribed` or the changed document's kind"},
        "data": {"type": "string", "description": "The frame, as JSON"},
    },
    "required": ["event", "data"],
}


class _JsonWhateverIsAccepted(BaseContentNegotiation):
    """``EventSource`` sends ``Accept: text/event-stream``; errors are JSON all the same
    (the stream itself is not a rendered response)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class EventsApi(APIView):
    content_negotiation_class = _JsonWhateverIsAccepted

    @extend_schema(
        operation_id="events_stream",
        summary="Follow a read-model stream as Server-Sent Events",
        description=__doc__.partition("(Everything above")[0],
        parameters=[
            OpenApiParameter("stream", OpenApiTypes.STR, required=True, pattern=streams.NAME_PATTERN,
                             description="orders | order:<uuid> | catalog | stock (staff) | dashboard (staff)"),
            OpenApiParameter("after", POSITION, required=False,
                             description="Resume after this position (when Last-Event-ID cannot be sent)"),
            OpenApiParameter("Last-Event-ID", POSITION, OpenApiParameter.HEADER, required=False,
                             description="Resume after this position (EventSource sends it on reconnect)"),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=EVENT_SCHEMA,
                description="An endless event stream: `id:` = position, `event:` = kind, `snapshot` or "
                            "`subscribed`, `data:` = JSON (see the description)"),
            400: OpenApiResponse(description="No stream, or a position that is not an integer >= 0"),
            401: OpenApiResponse(description="Not signed in"),
            403: OpenApiResponse(description="Not a stream this user may follow"),
            429: OpenApiResponse(description="Too many live connections (per user or on this server); "
                                             "Retry-After says when to try again"),
        },
    )
    def get(self, request):
        query = single_valued(request.query_params)
        name = query.get("stream")
        if not name:
            raise ParseError("Give the stream to follow: ?stream=<name>.")
        # Both are read, so a malformed one is refused even where the other is given.
        after = _position(query.get("after"), "after")
        resume = _position(request.headers.get("Last-Event-ID"), "Last-Event-ID")
        if resume is not None:
            after = resume
        try:
            subscription = streams.authorise(request.user, name)
        except streams.Refused as refused:
            raise PermissionDenied(str(refused)) from None
        try:
            held = connections.live_connections.hold(user_id=request.user.id)
        except connections.TooMany as refused:
            raise Throttled(wait=connections.RETRY_AFTER_SECONDS, detail=str(refused)) from None
        response = StreamingHttpResponse(_HeldStream(events(subscription, after, held), held),
                                         content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx (the gateway) must pass events on at once
        return response


def _position(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        position = int(value)
    except ValueError:
        position = -1
    if not 0 <= position <= streams.MAX_POSITION:
        raise ParseError(f"{what} must be a stream position (an integer from 0 to {streams.MAX_POSITION}).")
    return position


class _HeldStream:
    """The event stream as a response body whose ``close`` (Django calls it when the
    response is done, also when the client left before the body was read, so the
    stream's own ``finally`` never ran) gives back its place in the limits."""

    def __init__(self, body, held: connections.Held):
        self.body = body
        self.held = held

    def __aiter__(self):
        return self.body.__aiter__()

    def close(self) -> None:
        self.held.release()


PUSH_BUFFER = 100  # pushes held for one slow SSE client


def event(frame: dict) -> bytes:
    """One frame (as sent over WebSocket) as one SSE event."""
    kind = frame["kind"] if frame["type"] == "change" else frame["type"]
    return f"id: {frame['position']}\nevent: {kind}\ndata: {json.dumps(frame)}\n\n".encode()


async def events(subscription: streams.Subscription, after: int | None, held: connections.Held):
    """The event stream of one subscription, from ``after`` (``None``: a snapshot) on;
    ``held`` is released when it ends."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = changelog.stream_group(subscription.stream)
    await layer.group_add(group, channel)  # before reading the log: see sockets.py
    # Bounded: a client that reads slowly must not make this process buffer without end.
    # When it is full the receive loop waits, the channel layer's own per-channel capacity
    # drops what overflows (at most once, as always), and Follow.pushed refills the hole
    # from the log once the client catches up.
    pushes: asyncio.Queue = asyncio.Queue(maxsize=PUSH_BUFFER)

    async def receive():
        # One long-lived receive: cancelling a channel-layer receive on every heartbeat
        # timeout could drop a message in flight (channels_redis).
        try:
            while True:
                await pushes.put(await layer.receive(channel))
        except Exception:  # the layer is gone (e.g. Redis): end the stream, the client resumes
            await pushes.put({"type": "receiver.failed"})

    receiver = asyncio.create_task(receive())
    try:
        follow = streams.Follow(subscription)
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        for frame in await follow.catch_up(after):
            yield event(frame)
        yield event({"type": "subscribed", "stream": subscription.name, "position": follow.last})
        while True:
            try:
                message = await asyncio.wait_for(pushes.get(), heartbeat_seconds())
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if message["type"] == "receiver.failed":
                return
            if message["type"] == "change.pushed":
                for frame in await follow.pushed(message["change"]):
                    yield event(frame)
    finally:
        held.release()
        receiver.cancel()
        try:
            await layer.group_discard(group, channel)
        except Exception:  # noqa: BLE001 - leaving early; the group entry expires anyway
            pass
