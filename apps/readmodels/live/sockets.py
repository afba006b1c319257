"""Live push of read-model changes over WebSockets (Channels), without lost updates.

Projections record each change in the change log (``changelog.change_record``), which,
after their transaction commits, sends it to the stream's channel group (Redis in services
mode, so a worker reaches the web process that holds the socket). Channels delivers at
most once and in no promised order across processes; every change carries its stream
*position*, so this layer (``streams.Follow``), and the client, can tell what is missing
and fetch it from the log.

Endpoints (all under ``/ws/v1/``; session cookie from a browser on an allowed Origin, or
``Authorization: Token <key>`` in the handshake from an API client, see
``config/wsauth.py``; never a token in the URL):

- ``streams/``: the web shell's one shared connection; it follows nothing until asked.
- ``orders/`` (the customer's ``orders`` and the ``catalog``), ``catalog/``, ``stock/`` and
  ``dashboard/`` (staff): the same protocol and frames with their streams already
  followed, live, from the position each stream is at when the socket connects (no
  snapshot: a client that needs one, or is resuming, sends ``subscribe`` for the
  endpoint's stream).

Stream names (``streams.authorise`` decides who may follow which): ``orders`` (the signed-in
customer's orders), ``order:<uuid>`` (one of them), ``catalog``, ``stock``, ``dashboard``.

Client to server (JSON text frames)::

    {"action": "subscribe", "stream": "<name>", "after": <position> | null}
    {"action": "unsubscribe", "stream": "<name>"}

Server to client (every frame that concerns a stream names it as the client did)::

    {"type": "change", "stream": s, "position": p, "kind": k, "key": id, "version": v,
     "data": {...document...}, "committed_at": t?}      # one change (t only on live pushes)
    {"type": "snapshot", "stream": s, "position": p, "documents": [...]}   # the current state
    {"type": "subscribed", "stream": s, "position": p}     # catch-up sent; live from here
    {"type": "unsubscribed", "stream": s}
    {"type": "refused", "stream": s, "reason": "..."}      # not yours, unknown, or not staff
    {"type": "error", "reason": "..."}                     # a frame the server cannot read

Close codes: 4401 not signed in, 4403 a fixed endpoint's stream is refused (e.g. a
customer on ``stock/``), 4429 too many live connections (``connections.py``: per user and
per process, WebSockets and SSE together). A frame over ``WAYBILL_WS_MAX_FRAME_BYTES`` is
closed with 1009 (message too big), a frame that is not JSON, or JSON nested deeper than
``WAYBILL_JSON_MAX_DEPTH``, with 1007 (invalid payload), each after an ``error`` frame
saying why. A wrong Origin, or no Origin and no token header, is refused at the handshake
(HTTP 403).

Subscribing: without ``after`` the server sends a snapshot of the stream at position p,
then every change after p. With ``after`` = the last position the client applied, it sends
the changes after it from the log, oldest first, or a snapshot when the log no longer
holds them all. Then ``subscribed``. A repeated subscribe to the same name is a resume.

What a client must do to converge:

1. Keep, per stream, the last position applied; ignore any frame with a position at or
   below it (a change can arrive twice: once live, once from the log).
2. Apply a snapshot by replacing the stream's documents; documents and changes carry the
   read model's ``version``, never let a lower version replace a higher one.
3. Positions of ``orders``, ``catalog``, ``stock`` and ``dashboard`` are consecutive. If a
   change arrives with position > last + 1, something was lost: send ``subscribe`` again
   with ``after`` = last. (The server already refills such holes itself when it notices
   them, so this is the belt to its braces.) ``order:<uuid>`` shares the positions of the
   customer's whole ``orders`` stream, so they rise but skip the other orders' changes:
   do not treat a jump there as a loss.
4. After a reconnect, subscribe again to each stream with ``after`` = its last position.

How the server avoids losing a change between the log and the live pushes: it joins the
stream's channel group *before* reading the log or the snapshot. Channels hands this
consumer one message at a time, so pushes that arrive while the catch-up is read wait in
its channel (the buffer) and are then dropped if their position is at or below the last
one sent. A push whose position skips ahead of the last one sent means one was lost (or
is still on its way from another process): the server reads the hole from the log.
"""

from __future__ import annotations

from collections import Counter

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from waybill.api import jsonlimits

from . import changelog, connections, streams

# Close codes of the fixed endpoints (4000-4999 are the application's; 4401/4403 echo HTTP).
NOT_SIGNED_IN = 4401
REFUSED = 4403
# RFC 6455's own: a frame too big to take, a frame whose data we cannot accept.
MESSAGE_TOO_BIG = 1009
INVALID_PAYLOAD = 1007


class StreamsSocket(AsyncJsonWebsocketConsumer):
    """``/ws/v1/streams/``: any streams the user may follow, over one connection."""

    fixed: tuple[str, ...] = ()  # streams followed from connect (the fixed endpoints)

    held: connections.Held | None = None

    async def __call__(self, scope, receive, send):
        # Whatever ends the connection (a close, a crash in a handler, the server
        # cancelling the task on shutdown), its place in the limits is given back.
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.held is not None:
                self.held.release()

    async def connect(self):
        self.follows: dict[str, streams.Follow] = {}
        self.groups: Counter[str] = Counter()
        user = self.scope.get("user")
        signed_in = user is not None and user.is_authenticated
        too_many = None
        if signed_in:
            # Counted before the accept, so a client that saw its socket accepted knows
            # that socket holds its place.
            try:
                self.held = connections.live_connections.hold(user_id=user.id)
            except connections.TooMany as refused:
                too_many = refused
        # Accept first, then close: a close before accepting becomes an HTTP 403 at the
        # handshake, and the client could not tell "sign in" from "not allowed".
        await self.accept()
        if not signed_in:
            await self.close(code=NOT_SIGNED_IN)
            return
        if too_many is not None:
            await self.send_json({"type": "error", "reason": str(too_many)})
            await self.close(code=connections.TOO_MANY)
            return
        if not self.fixed:
            return
        try:
            subscriptions = await database_sync_to_async(
                lambda: [streams.authorise(user, name) for name in self.fixed])()
        except streams.Refused:
            await self.close(code=REFUSED)
            return
        follows = [streams.Follow(subscription) for subscription in subscriptions]
        for follow in follows:
            await self._join(follow)
        # Live from now: the position each stream is at once its group is joined. Without
        # it the first push would be the baseline, and a change that was committed before
        # it but arrived after it (from another process) would be dropped as a repeat.
        positions = await database_sync_to_async(
            lambda: [changelog.stream_position(follow.subscription.stream) for follow in follows])()
        for follow, position in zip(follows, positions, strict=True):
            follow.last = position

    async def dispatch(self, message):
        # Channels' own dispatch closes stale database connections before every message,
        # a round trip through one shared thread that cost about a third of a broadcast's
        # server time at 1,000 sockets (bench/websocket). Database work here goes through
        # database_sync_to_async, which does that cleanup itself, only when needed.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code):
        for group in getattr(self, "groups", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("action") not in ("subscribe", "unsubscribe"):
            await self.send_json({"type": "error", "reason": 'expected {"action": "subscribe" | "unsubscribe", ...}'})
            return
        name = content.get("stream")
        if not isinstance(name, str) or not name:
            await self.send_json({"type": "error", "reason": "a stream name is required"})
            return
        if content["action"] == "unsubscribe":
            await self._unsubscribe(name)
            return
        after = content.get("after")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                  or not 0 <= after <= streams.MAX_POSITION):
            await self.send_json({"type": "error", "stream": name, "reason": "after must be a position (int >= 0) or null"})
            return
        await self._subscribe(name, after)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None:
            await self.send_json({"type": "error", "reason": "frames are JSON text"})
            return
        try:
            content = jsonlimits.loads(text_data.encode(), max_bytes=settings.WAYBILL_WS_MAX_FRAME_BYTES,
                                       max_depth=settings.WAYBILL_JSON_MAX_DEPTH)
        except jsonlimits.JSONRefused as refused:
            # A client that sends this is broken or hostile: say why, then hang up.
            await self.send_json({"type": "error", "reason": refused.reason})
            await self.close(code=MESSAGE_TOO_BIG if refused.too_large else INVALID_PAYLOAD)
            return
        await self.receive_json(content)

    async def _subscribe(self, name: str, after: int | None) -> None:
        if self.fixed and name not in self.fixed:
            await self.send_json({"type": "refused", "stream": name, "reason": "not a stream of this endpoint"})
            return
        try:
            subscription = await database_sync_to_async(streams.authorise)(self.scope["user"], name)
        except streams.Refused as refused:
            await self.send_json({"type": "refused", "stream": name, "reason": str(refused)})
            return
        follow = self.follows.get(name) or streams.Follow(subscription)
        await self._join(follow)  # before reading the log: see the module docstring
        for frame in await follow.catch_up(after):
            await self.send_json(frame)
        await self.send_json({"type": "subscribed", "stream": name, "position": follow.last})

    async def _unsubscribe(self, name: str) -> None:
        follow = self.follows.pop(name, None)
        if follow is not None:
            group = changelog.stream_group(follow.subscription.stream)
            self.groups[group] -= 1
            if not self.groups[group]:
                del self.groups[group]
                await self.channel_layer.group_discard(group, self.channel_name)
        await self.send_json({"type": "unsubscribed", "stream": name})

    async def _join(self, follow: streams.Follow) -> None:
        if follow.name in self.follows:
            return
        self.follows[follow.name] = follow
        group = changelog.stream_group(follow.subscription.stream)
        if not self.groups[group]:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups[group] += 1

    async def change_pushed(self, event):
        change = event["change"]
        for follow in list(self.follows.values()):
            if follow.subscription.stream == change["stream"]:
                for frame in await follow.pushed(change):
                    await self.send_json(frame)


class OrdersSocket(StreamsSocket):
    """``/ws/v1/orders/``: the customer's own orders and the catalog."""

    fixed = ("orders", "catalog")


class CatalogSocket(StreamsSocket):
    fixed = ("catalog",)


class StockSocket(StreamsSocket):
    """Staff only (``streams.authorise`` refuses others: close 4403)."""

    fixed = ("stock",)


class DashboardSocket(StreamsSocket):
    """Staff only (``streams.authorise`` refuses others: close 4403)."""

    fixed = ("dashboard",)
