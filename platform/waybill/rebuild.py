"""Blue/green rebuilds of a consumer's projections (``contexts.Projection``) from the event
history, while the live projection keeps serving (``manage.py rebuild``, the admin action).

1. **Green tables.** A fresh copy of the context's schema, migrated: on PostgreSQL a schema
   of its own in the context's database (``<alias>_rebuild_<n>``); on SQLite a file beside
   the context's (``<name>.rebuild-<n>.sqlite3``). The replay writes there through the very
   same code as the live consumer: for the replay's thread, the context's database alias is
   a connection to the green tables (``_Green.installed``), so the handlers need not know.
2. **Replay** (``waybill.replay``) from the start of the history: side effects off, its
   position and the ids it applied committed with its rows in the green tables, so a
   rebuild killed at any point is resumed by running it again.
3. **The switch**, once the replay has caught up, in one transaction on the live database
   that first stops the live projection's writes to the tables switched (PostgreSQL: an
   EXCLUSIVE lock, so reads go on; SQLite: the write lock):
   - what the live consumer applied that the green tables lack (its inbox says what it
     applied: it got there before the history was read that far) is applied to them, so
     the green tables hold everything the live ones do;
   - the tables change places: on PostgreSQL the live and the green tables trade schemas
     (no row is copied); on SQLite, which cannot move a table between files, the rows are
     copied both ways.
   What the green tables hold that the live consumer has not applied yet, it applies when
   it gets there, to the new tables, and changes nothing: a replay-safe handler applies a
   message once whatever applies it first (``contexts.replay_safe``).
4. **The replaced tables** stay where the green ones were (the schema, the file) until
   ``manage.py rebuild --drop-replaced``.

Only the projection's own models are switched; the inbox, outbox, dead letters and the
context's other tables stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import OperationalError, connections, transaction
from django.db.utils import load_backend
from django.utils import timezone

from .contexts import BoundedContext, Projection
from .history import FIRST, HistoryGone, history
from .models import InboxMessageBase, RebuildBase
from .replay import Progress, Replay, ReplayRefused

log = logging.getLogger(__name__)

Status = RebuildBase.Status
InboxStatus = InboxMessageBase.Status
# How often the progress row is written (a row per batch would be a write per 500 messages).
PROGRESS_EVERY_SECONDS = 1.0
# A rebuild on another host that has not reported progress for this long has died.
LEASE_SECONDS = 60.0
# The switch waits at most this long for the live projection's tables, this many times.
SWITCH_LOCK_TIMEOUT_MS = 5000
SWITCH_ATTEMPTS = 5


class RebuildRunning(Exception):
    """Another process is on a rebuild of this consumer's projections."""


def projections_of(context: BoundedContext, names: list[str] | None) -> list[Projection]:
    if not context.projections:
        raise ReplayRefused(f"{context.name} declares no projections to rebuild")
    unknown = sorted(set(names or ()) - set(context.projections))
    if unknown:
        raise ReplayRefused(f"{context.name} has no projection {', '.join(unknown)} "
                            f"(it has {', '.join(sorted(context.projections))})")
    return [context.projections[name] for name in (names or sorted(context.projections))]


def rebuild(context: BoundedContext, names: list[str] | None = None, *,
            on_progress: Callable[[RebuildBase, Progress], None] | None = None) -> RebuildBase:
    """Rebuild ``names`` of ``context``'s projections (all by default), blue/green, and
    switch to them; an unfinished rebuild of the same projections is resumed."""
    projections = projections_of(context, names)
    chosen = sorted(projection.name for projection in projections)
    row = _claimed(context, chosen)
    types = {spec.message_type for projection in projections for spec in projection.types}
    models = [model for projection in projections for model in projection.models]
    green = _Green(context, row)
    try:
        green.create()
        replay = Replay(context, name=f"rebuild-{row.pk}", types=types)
        with green.installed():
            resumed = replay.stored_position() is not None
        if not resumed:
            _refuse_incomplete()
        _replay(replay, green, row, on_progress)
        row.status, row.updated_at = Status.SWITCHING, timezone.now()
        row.save(using=context.database)
        _switch(context, replay, green, row, models, types)
        log.info("%s: rebuild %s of %s switched (%d applied, %d refused)", context.name, row.pk,
                 ", ".join(chosen), replay.progress.applied, replay.progress.refused)
        return row
    except BaseException as error:
        row.running_on = ""
        # Refused before anything was replayed: nothing to resume. Otherwise it stays
        # resumable (its green tables and position are kept): running it again goes on.
        if isinstance(error, HistoryGone) and row.done == 0:
            row.status = Status.FAILED
        if isinstance(error, Exception):
            row.error = f"{type(error).__name__}: {error}"
        row.save(using=context.database)
        raise
    finally:
        green.close()


def _refuse_incomplete() -> None:
    """A rebuild from the start needs the whole history: rows built from what is left
    would lack every older message, and the switch would make them the live ones."""
    if history().trimmed():
        raise HistoryGone("the history no longer holds everything from the start (its retention has deleted its "
                          "oldest messages): a rebuild from it would lose what only those built")


def _claimed(context: BoundedContext, chosen: list[str]) -> RebuildBase:
    """The unfinished rebuild of ``chosen`` (or a new one), marked as this process's.
    Refused while another process is on a rebuild: two would write the same green tables,
    and two switches would each take the other's tables for the live ones."""
    with transaction.atomic(using=context.database):
        connection = connections[context.database]
        if connection.vendor == "postgresql":
            # Two claims at once (a double click) must not both insert a rebuild: a row lock
            # locks nothing while there is no row. SQLite's transactions take the write lock.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(context.rebuilds._meta.db_table)} "
                               f"IN SHARE ROW EXCLUSIVE MODE")
        rebuilds = context.rebuilds.objects.using(context.database).select_for_update()
        unfinished = list(rebuilds.filter(status__in=[Status.REPLAYING, Status.SWITCHING]))
        for other in unfinished:
            if _running(other):
                raise RebuildRunning(f"rebuild {other.pk} of {', '.join(other.projections)} is running on "
                                     f"{other.running_on} (last progress {other.updated_at:%Y-%m-%d %H:%M:%S})")
        row = next((other for other in unfinished if other.projections == chosen), None) \
            or context.rebuilds(projections=chosen, total=_history_size())
        row.running_on, row.updated_at = _this_process(), timezone.now()
        row.save(using=context.database)
    return row


def _running(row: RebuildBase) -> bool:
    """Whether the process named on ``row`` is still at it: on this host, whether that pid
    lives; on another, whether it reported progress lately."""
    host, _, pid = row.running_on.rpartition(":")
    if not host:
        return False
    if host == socket.gethostname():
        try:
            stat = Path(f"/proc/{int(pid)}/stat").read_text()
        except (FileNotFoundError, ValueError):
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    return (timezone.now() - row.updated_at).total_seconds() < LEASE_SECONDS


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def start_detached(context: BoundedContext, names: list[str] | None = None) -> subprocess.Popen:
    """Start ``manage.py rebuild`` for ``names`` as a process of its own (the admin's
    action): a rebuild points its thread's database alias at the green tables, which must
    not happen inside a web process's threads. Its log goes to ``WAYBILL_DATA_DIR``."""
    projections_of(context, names)  # refused here, where the operator sees it
    command = [sys.executable, "-m", "django", "rebuild", "--consumer", context.name, "--no-progress",
               *(argument for name in names or () for argument in ("--projection", name))]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
    log_path = Path(settings.DATA_DIR) / f"rebuild-{context.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    # Reaped when it ends, so that it does not linger as this process's zombie.
    threading.Thread(target=process.wait, name=f"rebuild-{process.pid}", daemon=True).start()
    return process


def running(context: BoundedContext) -> RebuildBase | None:
    """The rebuild of ``context`` a process is on now, if any."""
    return next((row for row in context.rebuilds.objects.using(context.database).filter(
        status__in=[Status.REPLAYING, Status.SWITCHING]) if _running(row)), None)


def _replay(replay: Replay, green: _Green, row: RebuildBase, on_progress) -> None:
    """The replay into the green tables, its progress on the rebuild's row about once a second."""
    began, reported, read_before = time.monotonic(), 0.0, row.done

    def progressed(progress: Progress) -> None:
        nonlocal reported
        row.done = read_before + progress.read
        if on_progress:
            on_progress(row, progress)
        if (now := time.monotonic()) - reported >= PROGRESS_EVERY_SECONDS:
            reported = now
            row.events_per_s = progress.read / max(now - began, 1e-6)
            row.updated_at = timezone.now()
            row.save(using=replay.context.database, update_fields=["done", "events_per_s", "updated_at"])

    replay.run(FIRST, on_batch=progressed, applying=green.installed)
    row.events_per_s = replay.progress.read / max(time.monotonic() - began, 1e-6) if replay.progress.read else None
    row.total = max(row.total or 0, row.done)


def _switch(context: BoundedContext, replay: Replay, green: _Green, row: RebuildBase, models: list,
            types: set[str]) -> None:
    live = context.inbox.objects.using(context.database)

    def missing_from_green() -> list[dict]:
        """What the live consumer applied of ``types`` that the green tables have not: ids
        compared, envelopes read only for what is missing."""
        with green.installed():
            applied = set(context.inbox.objects.using(context.database).values_list("message_id", flat=True))
        missing = [message_id for message_id in
                   live.filter(status=InboxStatus.PROCESSED, message_type__in=types).values_list("message_id", flat=True)
                   if message_id not in applied]
        return [envelope for start in range(0, len(missing), 500)
                for envelope in live.filter(message_id__in=missing[start:start + 500]).values_list("envelope",
                                                                                                   flat=True)]

    # Most of the gap before the lock, the rest under it (what the live consumer applied meanwhile).
    with green.installed():
        replay.apply_published(missing_from_green())
    for attempt in range(1, SWITCH_ATTEMPTS + 1):
        try:
            with transaction.atomic(using=context.database):
                connection = connections[context.database]
                tables = [model._meta.db_table for model in models]
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        # The live consumer's batches take these tables in their own order: a
                        # switch that waits too long gives way (a deadlock is detected anyway)
                        # and tries again, rather than holding the live projection up.
                        cursor.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
                        cursor.execute(f"LOCK TABLE {', '.join(map(connection.ops.quote_name, tables))} "
                                       f"IN EXCLUSIVE MODE")
                gap = missing_from_green()
                with green.installed():
                    replay.apply_published(gap)
                green.trade_places(connection, models)
                # Marked switched in the switch's own transaction: a crash right after it
                # must not resume the rebuild into the tables it replaced.
                row.status, row.switched_at, row.updated_at, row.replaced, row.running_on = \
                    Status.SWITCHED, timezone.now(), timezone.now(), green.where, ""
                row.save(using=context.database)
            break
        except OperationalError as error:  # a lock timeout or a deadlock: nothing of the switch stayed
            if attempt == SWITCH_ATTEMPTS:
                raise
            log.warning("%s: the switch of rebuild %s gave way (%s); trying again", context.name, row.pk, error)
    log.info("%s: %d messages the live consumer had applied first were applied at the switch", context.name,
             len(gap))


def drop_replaced(context: BoundedContext) -> list[str]:
    """Drop the tables switched rebuilds replaced; what was dropped."""
    dropped = []
    for row in context.rebuilds.objects.using(context.database).filter(status=Status.SWITCHED).exclude(replaced=""):
        _Green(context, row).drop()
        dropped.append(row.replaced)
        row.replaced = ""
        row.save(using=context.database, update_fields=["replaced"])
    for row in context.rebuilds.objects.using(context.database).filter(status=Status.FAILED):
        green = _Green(context, row)  # refused before it replayed: whatever it created goes
        green.drop()
    return dropped


def _columns(connection, model) -> tuple[str, str, str]:
    """A model's table, its columns and their placeholders, quoted for ``connection``."""
    quote = connection.ops.quote_name
    columns = [field.column for field in model._meta.concrete_fields]
    return quote(model._meta.db_table), ", ".join(map(quote, columns)), ", ".join(["%s"] * len(columns))


def _history_size() -> int | None:
    with contextlib.suppress(Exception):
        return history().size()
    return None


class _Green:
    """The green tables of rebuild ``number`` of a context, and a connection to them."""

    # A test database lives in memory only while a connection holds it, and a rebuild is
    # resumed with a new connection: one is kept for the process, as Django keeps its own.
    _kept_in_memory: dict[str, object] = {}

    def __init__(self, context: BoundedContext, row: RebuildBase):
        self.context, self.alias = context, context.database
        self.live_settings = connections.settings[self.alias]
        self.vendor = connections[self.alias].vendor
        self.settings = copy.deepcopy(self.live_settings)
        self.in_memory = False
        if self.vendor == "postgresql":
            self.schema = f"{self.alias}_rebuild_{row.pk}"
            options = self.settings.setdefault("OPTIONS", {})
            options.pop("pool", None)  # one connection, this thread's
            options["options"] = f"-c search_path={self.schema}"
            self.where = f"schema {self.schema}"
        else:
            name = str(self.live_settings["NAME"])
            if name.startswith("file:memorydb_") or name == ":memory:":  # a test database
                self.in_memory = True
                self.settings["NAME"] = (f"file:memorydb_{self.alias}_rebuild_{row.pk}_"
                                         f"{row.started_at.timestamp():.6f}?mode=memory&cache=shared")
            else:
                path = Path(name)
                self.settings["NAME"] = str(path.with_name(f"{path.stem}.rebuild-{row.pk}{path.suffix}"))
            self.where = f"file {self.settings['NAME']}"
        self._connection = None

    @property
    def connection(self):
        if self._connection is None:
            backend = load_backend(self.settings["ENGINE"])
            self._connection = backend.DatabaseWrapper(self.settings, self.alias)
            if self.in_memory and self.settings["NAME"] not in self._kept_in_memory:
                keeper = backend.DatabaseWrapper(self.settings, self.alias)
                keeper.ensure_connection()
                self._kept_in_memory[self.settings["NAME"]] = keeper
        return self._connection

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """For this thread only, the context's alias is the green tables. Django keeps one
        connection per alias per thread (``connections`` is thread-local), and its own live
        server thread shares a connection the same way; the other threads, the live
        consumer's among them, keep theirs."""
        live = connections[self.alias]
        connections[self.alias] = self.connection
        try:
            yield
        finally:
            connections[self.alias] = live

    def create(self) -> None:
        if self.vendor == "postgresql":
            with connections[self.alias].cursor() as cursor:
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {connections[self.alias].ops.quote_name(self.schema)}")
        with self.installed():
            call_command("migrate", self.context_app_label(), database=self.alias, verbosity=0)

    def context_app_label(self) -> str:
        return self.context.inbox._meta.app_label

    def trade_places(self, live, models: list) -> None:
        """Inside the live transaction: the green tables become the live ones, and the live
        ones are kept where the green ones were."""
        quote = live.ops.quote_name
        if self.vendor == "postgresql":
            with live.cursor() as cursor:
                cursor.execute("SELECT current_schema()")
                (current,) = cursor.fetchone()
                aside = f"{self.schema}_swap"
                cursor.execute(f"CREATE SCHEMA {quote(aside)}")
                for model in models:
                    table = quote(model._meta.db_table)
                    cursor.execute(f"ALTER TABLE {quote(current)}.{table} SET SCHEMA {quote(aside)}")
                    cursor.execute(f"ALTER TABLE {quote(self.schema)}.{table} SET SCHEMA {quote(current)}")
                    cursor.execute(f"ALTER TABLE {quote(aside)}.{table} SET SCHEMA {quote(self.schema)}")
                cursor.execute(f"DROP SCHEMA {quote(aside)}")
            return
        # SQLite: the rows are copied both ways; the replaced ones go into the green file
        # once the live transaction has committed (they are only kept for a while).
        replaced = {}
        with live.cursor() as live_cursor, self.connection.cursor() as green_cursor:
            for model in models:
                table, names, marks = _columns(live, model)
                live_cursor.execute(f"SELECT {names} FROM {table}")
                replaced[model] = live_cursor.fetchall()
                green_cursor.execute(f"SELECT {names} FROM {table}")
                live_cursor.execute(f"DELETE FROM {table}")
                live_cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", green_cursor.fetchall())

        def keep_replaced() -> None:
            with self.installed(), transaction.atomic(using=self.alias), self.connection.cursor() as cursor:
                for model, rows in replaced.items():
                    table, names, marks = _columns(live, model)
                    cursor.execute(f"DELETE FROM {table}")
                    cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)

        transaction.on_commit(keep_replaced, using=self.alias)

    def drop(self) -> None:
        if self.vendor == "postgresql":
            with connections[self.alias].cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {connections[self.alias].ops.quote_name(self.schema)} CASCADE")
            return
        self.close()
        name = self.settings["NAME"]
        if keeper := self._kept_in_memory.pop(name, None):
            keeper.close()
        if not self.in_memory:
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
