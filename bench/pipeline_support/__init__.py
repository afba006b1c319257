"""Support for ``bench.pipeline`` (scenario 1, order pipeline, and scenario 4, memory).

- ``load``: the open-loop load generator (asyncio + httpx) and the WebSocket listener.
- ``sampler``: peak RSS and CPU seconds of every process of a deployment (psutil).
- ``targets``: the three systems under test, each a context manager: the services
  deployment, the embedded platform and the synchronous baseline.
- ``syncshop``: the synchronous baseline itself (one Django view, one transaction).
"""
