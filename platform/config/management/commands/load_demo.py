from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError

from apps.inventory import selectors as inventory_selectors
from apps.inventory import services as inventory

DEMO_PRODUCTS = [
    ("KETTLE-1", "Copper kettle", Decimal("49.00"), 25),
    ("MUG-2", "Stoneware mug", Decimal("12.50"), 120),
    ("TEAPOT-3", "Cast-iron teapot", Decimal("89.90"), 8),
    ("TEA-4", "Assam tea, 250 g", Decimal("9.75"), 200),
    ("LAMP-5", "Brass desk lamp", Decimal("2150.00"), 3),
]


class Command(BaseCommand):
    help = "Load the demo shop: products with stock, customers alice and bob, staff admin (dev only)."

    def handle(self, *args, **options):
        if not settings.WAYBILL_DEMO_ACCOUNTS:
            raise CommandError("Demo accounts exist only in the embedded/dev settings.")
        password = settings.WAYBILL_DEMO_PASSWORD
        User = get_user_model()
        for username, staff in (("alice", False), ("bob", False), ("admin", True)):
            user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.test"})
            user.is_staff = user.is_superuser = staff
            # Only when it changed: a new hash (new salt) would sign out every session of
            # the account, and `make up` loads the demo data at every start.
            if not user.check_password(password):
                user.set_password(password)
            user.save()
        for sku, name, price, on_hand in DEMO_PRODUCTS:
            if inventory_selectors.product_get(sku=sku) is None:
                inventory.product_create(sku=sku, name=name, price=price, on_hand=on_hand)
        self.stdout.write(f"Demo data ready: alice, bob, admin / password {password!r}; {len(DEMO_PRODUCTS)} products.")
