"""Messaging: the broker, the relay, the consumers, and Celery, which hosts the consumers
in services mode (waybill/bus.py, relay.py, consumer.py, worker.py)."""

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from waybill import historylimits, jsonlimits

from .contexts import WAYBILL_CONTEXTS
from .environment import WAYBILL_BROKER_URL, env

WAYBILL_PORT = env.int("WAYBILL_PORT", default=8000)
WAYBILL_BROKER_TRANSPORT_OPTIONS = {
    # The in-memory transport polls its queues, sleeping this long when all are empty: 1 s
    # (Kombu's default) would add a second to every hop; 5 ms kept an idle `make run` at 28 %
    # of a core, 20 ms at 17 % (CPU time of runplatform with the demo data over 20 s, idle),
    # for at most 20 ms more on a hop that finds its queue empty. RabbitMQ ignores this option.
    "polling_interval": 0.02,
    # Publisher confirms: the relay marks a row sent only after the broker has it.
    "confirm_publish": True,
}
# RabbitMQ's management API (http://user:password@host:15672), for the operations console:
# the only place that counts a queue's unacknowledged messages. Without it the console
# asks the broker itself (ready messages and consumers). The shell gets the admin account's.
# A cluster's nodes are ";"-separated, as in the broker's URL; the first that answers is asked.
WAYBILL_BROKER_MANAGEMENT_URL = env.str("WAYBILL_BROKER_MANAGEMENT_URL", default="")
# Partitions per consumer queue (see waybill.bus): 1 = one queue that competing workers
# share; N > 1 = N queues with a single active consumer each, for strict per-aggregate order.
WAYBILL_PARTITIONS = env.int("WAYBILL_PARTITIONS", default=1)
# The consumers a Celery worker runs (empty: all of its contexts'); a bulkhead worker
# runs one, e.g. WAYBILL_CONSUMERS=payments.
WAYBILL_CONSUMERS = tuple(env.list("WAYBILL_CONSUMERS", default=[]))
# Consumers whose deployed code reads an older version of some type than its producer
# publishes (a rolling deployment, or a consumer that cannot be upgraded yet), as
# "<consumer>:<type>@<version>" entries: the topology feeds each through the translator,
# which republishes what it reads downcast to that version (waybill.bus, waybill.translator).
WAYBILL_LAGGING = tuple(env.list("WAYBILL_LAGGING", default=[]))
# Embedded mode declares the bus topology itself. In services mode the launcher declares
# it once with an admin account, and each service's broker user may not configure
# anything but its own task queue.
WAYBILL_BROKER_DECLARE = env.bool("WAYBILL_BROKER_DECLARE", default=True)
# The relay sweeps its outbox this often besides waking on commits; in services mode the
# context's worker also runs this sweep as a backstop for the relay process (waybill.scheduler).
WAYBILL_RELAY_SWEEP_SECONDS = env.float("WAYBILL_RELAY_SWEEP_SECONDS", default=2.0)
WAYBILL_RELAY_BATCH_SIZE = env.int("WAYBILL_RELAY_BATCH_SIZE", default=500)
WAYBILL_RELAY_MAX_ATTEMPTS = env.int("WAYBILL_RELAY_MAX_ATTEMPTS", default=10)
# How long the relay waits for the broker to confirm a window of publishes before it
# treats them as failed (they are published again: at least once).
WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS = env.float("WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS", default=10.0)
# A consumer applies up to this many messages in one transaction (each in a savepoint of
# its own), writes their inbox rows together and commits once: one commit per batch, not
# per message. A crash before the commit redelivers the whole batch (the inbox drops what
# was applied), so it stays small.
WAYBILL_CONSUMER_BATCH_SIZE = env.int("WAYBILL_CONSUMER_BATCH_SIZE", default=50)
# How long a batch may wait for more messages once it has one. 0: it takes what has
# already arrived and goes, so a lone message is never delayed; under load, messages
# arrive while a batch is applied and the next one fills by itself.
WAYBILL_CONSUMER_BATCH_WAIT_SECONDS = env.float("WAYBILL_CONSUMER_BATCH_WAIT_SECONDS", default=0.0)
# Messages a consumer holds unacked at once: a batch being applied and the next one on its
# way. A batch is never larger than this.
WAYBILL_CONSUMER_PREFETCH = env.int("WAYBILL_CONSUMER_PREFETCH", default=100)
# AMQP heartbeats of a consumer's connection: a broker that went silent (a half-open
# connection) is noticed within about two of them, and the consumer reconnects. 120, as
# Celery's default: a batch (or a wait for the database) longer than that loses the
# connection, and its messages come again.
WAYBILL_CONSUMER_HEARTBEAT_SECONDS = env.float("WAYBILL_CONSUMER_HEARTBEAT_SECONDS", default=120.0)
# A consumer whose bindings are chosen at run time (webhooks: the types some endpoint wants)
# asks this often whether they changed in another process (a change in its own process is
# bound at the next scheduler tick), and binds everything afresh this often anyway.
WAYBILL_BINDINGS_SECONDS = env.float("WAYBILL_BINDINGS_SECONDS", default=1.0)
WAYBILL_BINDINGS_RESYNC_SECONDS = env.float("WAYBILL_BINDINGS_RESYNC_SECONDS", default=60.0)
WAYBILL_RETRY_MAX_ATTEMPTS = env.int("WAYBILL_RETRY_MAX_ATTEMPTS", default=5)
WAYBILL_RETRY_BASE_SECONDS = env.float("WAYBILL_RETRY_BASE_SECONDS", default=0.5)
WAYBILL_RETRY_MAX_SECONDS = env.float("WAYBILL_RETRY_MAX_SECONDS", default=60.0)
# A message on the bus larger than this, or nested deeper, is dead-lettered unread; the
# relay refuses to publish a bigger one (every consumer would refuse it).
WAYBILL_MESSAGE_MAX_BYTES = env.int("WAYBILL_MESSAGE_MAX_BYTES", default=1024 * 1024)
WAYBILL_MESSAGE_MAX_DEPTH = env.int("WAYBILL_MESSAGE_MAX_DEPTH", default=jsonlimits.DEFAULT_MAX_DEPTH)
# How much of a message's body the admin shows as text (dead letters, inbox, outbox); the
# whole body is a download.
WAYBILL_MESSAGE_PREVIEW_BYTES = env.int("WAYBILL_MESSAGE_PREVIEW_BYTES", default=4096)

# The event history (waybill.history): a RabbitMQ stream in services mode, each context's
# outbox archive embedded (the in-memory transport has no streams). How long it keeps
# what, in waybill.historylimits.
WAYBILL_HISTORY = env.str("WAYBILL_HISTORY", default="archive" if WAYBILL_BROKER_URL.startswith("memory://")
                          else "stream")
if WAYBILL_HISTORY not in ("stream", "archive"):
    raise ImproperlyConfigured(f"WAYBILL_HISTORY={WAYBILL_HISTORY!r}: 'stream' or 'archive'")
if WAYBILL_HISTORY == "stream" and WAYBILL_BROKER_URL.startswith("memory://"):
    # It would be a plain queue bound to every event, that nobody reads and that only grows.
    raise ImproperlyConfigured("WAYBILL_HISTORY=stream needs RabbitMQ: the in-memory transport has no streams")
WAYBILL_HISTORY_MAX_AGE_SECONDS = env.int(historylimits.MAX_AGE_VARIABLE, default=historylimits.MAX_AGE_SECONDS)
# A reader of the history (a rebuild, a rewind) gets it in batches of at most this many,
# and a replay commits once per batch, with its position.
WAYBILL_HISTORY_BATCH = env.int("WAYBILL_HISTORY_BATCH", default=500)
# Embedded, the archive is read up to this long ago (history.OutboxArchive says why).
WAYBILL_HISTORY_ARCHIVE_SETTLE_SECONDS = env.float("WAYBILL_HISTORY_ARCHIVE_SETTLE_SECONDS", default=2.0)

# --- Celery: JSON only (nothing that accepts pickle), late acks, bounded prefetch.
CELERY_BROKER_URL = WAYBILL_BROKER_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Remote control and task events need broker permissions beyond a service's own queues.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Each context's task queue has an exchange of the same name, so its broker user needs
# rights on its own names only (never the shared default exchange). A quorum queue, as the
# event queues are: a classic queue lives on one node of a cluster, and while that node is
# down the worker's Celery cannot declare it and exits (Celery sees the type and turns off
# the global QoS quorum queues refuse). The topology step replaces an older classic one.
CELERY_TASK_QUEUES = [
    Queue(f"waybill.tasks.{context}", Exchange(f"waybill.tasks.{context}", type="direct"),
          routing_key=f"waybill.tasks.{context}", durable=True, queue_arguments={"x-queue-type": "quorum"})
    for context in WAYBILL_CONTEXTS
]
# Without Celery's native delayed delivery (see waybill.worker.Consumer).
CELERY_WORKER_CONSUMER = "waybill.worker:Consumer"
CELERY_TASK_DEFAULT_QUEUE = f"waybill.tasks.{WAYBILL_CONTEXTS[0]}" if WAYBILL_CONTEXTS else "waybill.tasks"
