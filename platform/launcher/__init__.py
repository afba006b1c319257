"""Start and provision private PostgreSQL, RabbitMQ and Redis servers on 127.0.0.1.

Used by the ``make up`` launcher and by the services test suite (tests/services/).
See servers.py (processes) and provision.py (databases, roles, vhosts, users).
"""
