"""Helpers of the outbox-relay scenario (``bench/relay.py``).

Every module here that ends in ``_proc`` is run as a subprocess by ``bench.relay``, so a
measured publisher is a process of its own that can be SIGKILLed mid-run:

- ``waybill_proc``: the product's own code (Django with Waybill's settings): fill the
  orders outbox, time ``Relay.drain()``, write outbox rows at a fixed rate
  (``outbox_record``). The long-running relay is the product's ``manage.py runrelay``.
- ``onco_proc``: the usual Django way: commit a row, ``transaction.on_commit`` calls a
  Celery task's ``delay()`` (``celery_app``).
- ``dop_proc``: django-outbox-pattern 3.2.x (``django_settings`` + ``shop``): fill its
  ``published`` table, time its producer's pass, write rows at a fixed rate; its
  long-running publisher is the package's own ``publish`` management command.
- ``kombu_proc``: a raw Kombu publish loop (the ceiling), plus the same loop with
  pipelined publisher confirms.
- ``broker``: the queues (durable quorum queues), counting them, and the consumer that
  timestamps arrivals and collects message ids (also run as a subprocess).
- ``common``: envelopes, the open-loop fixed-rate driver, progress counters.
"""
