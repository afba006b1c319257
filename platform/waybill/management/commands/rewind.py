import json
from datetime import datetime

from django.core.management import BaseCommand, CommandError
from tqdm import tqdm

from waybill import contexts
from waybill.history import FIRST, HistoryGone, history
from waybill.replay import Replay, ReplayRefused


class Command(BaseCommand):
    help = (
        "Rewind a consumer: apply the event history again to its live tables from a time or a position "
        "(waybill.replay), e.g. after its database was restored from a backup taken then. Only for a "
        "consumer whose handlers are replay-safe; side effects stay off. Run without --to, it goes on "
        "with the rewind it was doing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--consumer", required=True)
        parser.add_argument("--to", help="'first', an ISO 8601 time (2026-12-01T10:00:00+00:00) or a position "
                                         "as JSON (as the history gives it)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, consumer, to=None, no_progress=False, **options):
        try:
            context = contexts.get(consumer)
        except KeyError:
            raise CommandError(f"no consumer {consumer!r} is hosted here") from None
        try:
            replay = Replay(context, name="rewind", inbox=False)  # what the live inbox has, applied again
            if to is not None:
                replay.forget()
            elif replay.stored_position() is None:
                raise CommandError("no rewind to go on with: say where to rewind to (--to)")
            with tqdm(total=history().size(), unit="event", desc=f"rewind {consumer}", disable=no_progress) as bar:
                progress = replay.run(_start(to), on_batch=lambda progress: bar.update(progress.read - bar.n))
        except (ReplayRefused, HistoryGone) as refused:
            raise CommandError(str(refused)) from None
        self.stdout.write(f"rewound {consumer}: {progress.read} events read, {progress.applied} applied again, "
                          f"{progress.refused} refused; at {json.dumps(progress.position)}")


def _start(to: str | None):
    if to is None or to == FIRST:
        return FIRST
    if to.lstrip().startswith("{"):
        return json.loads(to)
    try:
        when = datetime.fromisoformat(to)
    except ValueError:
        raise CommandError(f"--to {to!r}: 'first', an ISO 8601 time or a position as JSON") from None
    if when.tzinfo is None:
        raise CommandError(f"--to {to!r}: give the time zone (e.g. +00:00)")
    return when
