"""Helpers of the rebuild scenario (``bench/rebuild.py``), run as subprocesses with the
product's services-mode environment for readmodels (``launcher.stack.Stack.env``):

- ``history``: generate the event history the scenario replays (orders' and inventory's
  events and documents, built with their real contract classes) and publish it to the
  events exchange, so that the broker puts it in the history stream and in readmodels'
  queue; and refill readmodels' queue alone with the same messages for a later live drain.

The consumers are not here: the live one is the product's ``readmodels-worker`` process,
the rebuild its ``manage.py rebuild``.
"""
