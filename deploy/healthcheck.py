"""Health check of a container whose process serves no HTTP (Celery worker and beat, the
outbox relay): healthy while it holds an established TCP connection to the given port.

    python deploy/healthcheck.py 5672     # the broker

A container has a network namespace of its own, so /proc/net/tcp lists this process's
sockets and nobody else's. Standard library only: it runs in the app image as is.
"""

import sys

ESTABLISHED = "01"


def connected(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> bool:
    for table in tables:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this namespace
            continue
        for row in rows:
            remote, state = row.split()[2:4]  # remote as hex address:port
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                return True
    return False


if __name__ == "__main__":
    sys.exit(0 if connected(int(sys.argv[1])) else 1)
