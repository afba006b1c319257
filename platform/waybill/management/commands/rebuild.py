from django.core.management import BaseCommand, CommandError
from tqdm import tqdm

from waybill import contexts, rebuild as rebuilds
from waybill.history import HistoryGone
from waybill.replay import ReplayRefused


class Command(BaseCommand):
    help = (
        "Rebuild a consumer's projections from the event history into fresh tables while the live ones keep "
        "serving, then switch to them (waybill.rebuild). Run again, it resumes an unfinished rebuild."
    )

    def add_arguments(self, parser):
        parser.add_argument("--consumer", help="whose projections (default: the one hosted consumer that has some)")
        parser.add_argument("--projection", action="append", dest="projections",
                            help="one projection to rebuild (repeatable; default: all of the consumer's)")
        parser.add_argument("--drop-replaced", action="store_true",
                            help="instead: drop the tables that switched rebuilds replaced")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")

    def handle(self, *args, consumer=None, projections=None, drop_replaced=False, no_progress=False, **options):
        context = self._consumer(consumer)
        if drop_replaced:
            for where in rebuilds.drop_replaced(context):
                self.stdout.write(f"dropped {where}")
            return
        bar = None

        def shown(row, progress) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=row.total, initial=row.done - progress.read, unit="event", desc=f"rebuild {row.pk}",
                           disable=no_progress)
            bar.update(row.done - bar.n)

        try:
            row = rebuilds.rebuild(context, projections, on_progress=shown)
        except (ReplayRefused, HistoryGone, rebuilds.RebuildRunning) as refused:
            raise CommandError(str(refused)) from None
        finally:
            if bar is not None:
                bar.close()
        self.stdout.write(f"rebuild {row.pk} of {', '.join(row.projections)}: switched after {row.done} events "
                          f"({row.events_per_s or 0:.0f}/s); the replaced tables are in {row.replaced} until "
                          f"`manage.py rebuild --drop-replaced`")

    def _consumer(self, name):
        having = [context for context in contexts.all_contexts() if context.projections]
        if name:
            having = [context for context in having if context.name == name]
        if len(having) != 1:
            raise CommandError(f"name one consumer with projections (--consumer): "
                               f"{', '.join(context.name for context in having) or 'none is hosted here'}")
        return having[0]

