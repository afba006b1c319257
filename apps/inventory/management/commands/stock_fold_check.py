from django.core.management import BaseCommand, CommandError

from apps.inventory import ledger


class Command(BaseCommand):
    help = ("Fold every product's stock ledger, from its first entry and from its last snapshot, and compare "
            "both with the product's row; exits 1 and names each one that differs.")

    def handle(self, *args, **options):
        problems = ledger.fold_check()
        if problems:
            raise CommandError("the stock ledger and the rows differ:\n" + "\n".join(problems))
        self.stdout.write("every product's row is its ledger's fold")
