"""Helpers of the consumer scenario (``bench/consume.py``), each run as a subprocess with
the product's services-mode environment (``launcher.stack.Stack.env`` for inventory):

- ``backlog``: seed inventory's products, and publish a backlog of ``inventory.reserve_stock``
  messages to RabbitMQ (persistent, publisher confirms), either as Waybill envelopes routed
  by ``waybill.bus.route`` or as Celery task messages of the comparison app;
- ``celery_app``: the comparison, the usual Django way: one plain Celery task per message
  (``acks_late``, one ``transaction.atomic()``: an inbox row for dedupe, then inventory's
  real handler, which writes the same rows and events as Waybill's consumer; see
  ``bench/consume.py`` for the state documents, which Waybill folds within a batch).

The Waybill side is not here: it is the product's own worker process for inventory, the
command ``launcher.deployment`` gives it.
"""
