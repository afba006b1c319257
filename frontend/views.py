"""The shell's pages: which micro-frontends a page composes, and who may open it.

No business logic and no data here: every element loads and follows its own data through
the API and the shared realtime connection. Staff pages are refused to customers here,
and their data is refused again by the API and the stream authorisation."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


def _page(template: str, *, staff: bool = False):
    @login_required
    @ensure_csrf_cookie  # the elements' fetch() calls send it back as X-CSRFToken
    def view(request, **kwargs):
        if staff and not request.user.is_staff:
            raise PermissionDenied  # 403: signed in, but not staff
        return render(request, template, kwargs)

    return view


shop = _page("frontend/shop.html")
my_orders = _page("frontend/my_orders.html")
order_tracker = _page("frontend/tracker.html")
stock_board = _page("frontend/stock.html", staff=True)
dashboard = _page("frontend/dashboard.html", staff=True)
