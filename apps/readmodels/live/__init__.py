"""The read side's live push path: every read-model change, from the projection that makes
it to the browsers that follow it, over WebSocket or Server-Sent Events.

In the order a change travels:

- ``changelog``: ``change_record``, the one call a projection makes for a changed row,
  numbers the change on its stream inside the projection's transaction and pushes it to
  the stream's channel group after commit; ``changes_since`` reads what a client missed.
- ``streams``: who may follow which stream, its snapshot, and a client's place in it
  (``Follow``: drops repeats, refills holes from the log).
- ``sockets`` (WebSocket, with the protocol in its docstring) and ``sse`` (Server-Sent
  Events): the endpoints, both following through ``streams``.
- ``connections``: how many live connections a user and a process may hold.

The change log imports none of the others; they import it.
"""
