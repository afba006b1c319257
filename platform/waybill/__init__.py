"""Waybill's shared kernel: messages, outbox, relay, bus, inbox and the embedded runtime.

The kernel knows no bounded context. Contexts register themselves (see ``contexts``) and
the kernel moves their messages. ``platform/`` is on ``sys.path`` like a ``src/`` folder and
is deliberately not a package, so Python's own ``platform`` module stays reachable.
"""
