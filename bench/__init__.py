"""Waybill's benchmarks: `make bench` (full) or `make bench-quick` (a smoke run).

Every scenario starts what it measures itself (private PostgreSQL, RabbitMQ, Redis on free
loopback ports; embedded platforms in temporary folders), warms up, repeats, and reports
medians with the spread over repeats. Results: docs/benchmarks/results.json (stable keys),
results.md (the table README shows) and PNG charts beside them.
"""
