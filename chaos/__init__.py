"""Waybill under faults: `make chaos` (issue 16).

A seeded, repeatable chaos run on services mode: thousands of orders from several
customers at a steady rate while processes, the broker, the database and the payment
provider fail on a schedule printed at the start, then every invariant checked against
each context's own database, the payment provider's records, the read side's rebuild, the
live WebSocket clients and a webhook receiver. tests/services/test_chaos_run.py runs a
small version of the same code in `make test`.

- ``topology``: the deployment (one function, ``deployed``).
- ``load``: the steady load and the tracker of outcomes (reusable for a soak).
- ``sockets``: the WebSocket client population; ``webhooks``: the receiver.
- ``faults``: the seeded schedule and its injector.
- ``checks``: the invariants and figures; ``run``: one run end to end; ``report``: the
  results, the Markdown report and its chart.
"""
