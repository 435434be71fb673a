"""Trade history pages: fills and orders of the fleet (or one bot), filtered, paged, totalled, exported."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import permission_required
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.accounts.selectors import acting_user
from apps.audit.services import record
from apps.bots.models import Bot
from apps.core.input_validation import BIGINT_MAX, InputError
from apps.trading import charts, history
from apps.trading.forms import OrderFilterForm, TradeFilterForm
from apps.trading.ledger import split_symbol
from apps.trading.models import Fill, Order

VIEW = "accounts.view_console"
# Cells a spreadsheet would run as a formula; prefixed with ' in the CSV (as the audit export does).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Kind:
    name: str  # "fills" or "orders"
    form: type[TradeFilterForm]
    template: str
    fields: tuple[str, ...]
    row: Callable[[Any], dict[str, Any]]
    batches: Callable[..., Iterator[list[Any]]]


FILLS = Kind(
    "fills",
    TradeFilterForm,
    "trading/fills.html",
    history.FILL_EXPORT_FIELDS,
    history.fill_record,
    history.fill_export_batches,
)
ORDERS = Kind(
    "orders",
    OrderFilterForm,
    "trading/orders.html",
    history.ORDER_EXPORT_FIELDS,
    history.order_record,
    history.order_export_batches,
)


def _history(request: HttpRequest, kind: Kind) -> HttpResponse:
    form = kind.form(request.GET)
    context: dict[str, Any] = {"form": form, "kind": kind.name}
    if not form.is_valid():  # nothing is queried with a bad filter
        return render(request, kind.template, context, status=400)
    filters = form.filters()
    before, after = form.cursor()
    if kind is FILLS:
        page: history.HistoryPage[Any] = history.fills_page(filters, before=before, after=after)
        totals = history.fill_totals(filters)
        context["totals"] = totals
        context["money"] = {
            "volume": _money(totals.volume),
            "fees": _money(totals.fees),
            "realized": _money(totals.realized),
        }
    else:
        page = history.orders_page(filters, before=before, after=after)
        order_totals = history.order_totals(filters)
        context["totals"] = order_totals
        context["money"] = {"placed": _money(order_totals.placed)}
    context.update(
        page=page,
        rows=[_display(row) for row in page.rows],
        newer_query=form.query(after=page.newer_cursor) if page.newer_cursor is not None else None,
        older_query=form.query(before=page.older_cursor) if page.older_cursor is not None else None,
        first_query=form.query() if before is not None or after is not None else None,
        filter_query=form.query(),
    )
    return render(request, kind.template, context)


def plain(value: Decimal | None) -> str:
    """A stored amount as written by people: 12.5, not 12.500000000000 or 1.25E+1."""
    return "" if value is None else format(value.normalize(), "f")


def _display(row: Fill | Order) -> dict[str, Any]:
    """A row with its figures written plainly and the currencies they are in (price and volume in the
    quote, amounts in the base)."""
    order = row.order if isinstance(row, Fill) else row
    base, quote = split_symbol(order.symbol)
    shown: dict[str, Any] = {"row": row, "order": order, "base": base, "quote": quote}
    if isinstance(row, Fill):
        shown.update(price=plain(row.price), amount=plain(row.amount), fee=plain(row.fee))
        shown["volume"] = plain(row.price * row.amount)
    else:
        shown.update(price=plain(row.price), amount=plain(row.amount), filled=plain(row.filled))
        shown["average"] = plain(row.average)
    return shown


def _money(amounts: list[tuple[str, Decimal]] | None) -> list[tuple[str, str]] | None:
    return None if amounts is None else [(unit, plain(amount)) for unit, amount in amounts]


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def fills_view(request: HttpRequest) -> HttpResponse:
    return _history(request, FILLS)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def orders_view(request: HttpRequest) -> HttpResponse:
    return _history(request, ORDERS)


def _csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv_chunks(kind: Kind, batches: Iterator[list[Model]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(kind.fields)
    for batch in batches:
        for row in batch:
            record_ = kind.row(row)
            writer.writerow([_csv_cell(record_[name]) for name in kind.fields])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


async def _async_chunks(make: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
    # Under ASGI, Django would read a synchronous iterator to its end before sending a byte;
    # an async one streams. Each step runs in the thread that holds the database connection.
    chunks = await sync_to_async(make)()
    step = sync_to_async(lambda: next(chunks, None))
    while (chunk := await step()) is not None:
        yield chunk


def _export(request: HttpRequest, kind: Kind) -> HttpResponseBase:
    form = kind.form(request.GET)
    if not form.is_valid():
        return render(request, kind.template, {"form": form, "kind": kind.name}, status=400)
    filters = form.filters()
    upto = history.history_head(kind.name)
    # The export is a read, but who took which trades out of the console is worth knowing: audited
    # before the first byte, with the filters and the newest row it covers.
    record(
        actor=acting_user(request),
        action="trades.exported",
        request=request,
        data={"kind": kind.name, "format": "csv", "filters": filters.as_audit_data(), "upto_id": upto},
    )

    def make() -> Iterator[str]:
        return _csv_chunks(kind, kind.batches(filters, upto=upto))

    content = _async_chunks(make) if isinstance(request, ASGIRequest) else make()
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{kind.name}-{stamp}-upto-{upto}.csv"'
    return response


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def fills_export_view(request: HttpRequest) -> HttpResponseBase:
    return _export(request, FILLS)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def orders_export_view(request: HttpRequest) -> HttpResponseBase:
    return _export(request, ORDERS)


# -- charts: JSON for static/js/bot-chart.js and static/js/dashboard-chart.js ---------------------------------------


def _chart_refusal(request: HttpRequest) -> JsonResponse | None:
    if not request.user.has_perm(VIEW):
        return JsonResponse({"error": "You may not view the console."}, status=403)
    return None


@never_cache
@require_GET
def bot_chart_view(request: HttpRequest, bot_id: int) -> JsonResponse:
    """A bot's chart (the bot page's permission): candles of `symbol` per `tf`, its fills, orders, levels, PnL."""
    if (refused := _chart_refusal(request)) is not None:
        return refused
    bot = Bot.objects.select_related("account").filter(pk=bot_id).first() if bot_id <= BIGINT_MAX else None
    if bot is None:
        return JsonResponse({"error": "No such bot."}, status=404)
    try:
        query = charts.chart_query_parse(bot=bot, params=request.GET)
    except InputError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    return JsonResponse(charts.bot_chart(bot=bot, query=query))


@never_cache
@require_GET
def fleet_chart_view(request: HttpRequest) -> JsonResponse:
    """The dashboard's chart: the fleet's PnL and each bot's over `range`."""
    if (refused := _chart_refusal(request)) is not None:
        return refused
    try:
        range_key = charts.chart_range_parse(request.GET)
    except InputError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    return JsonResponse(charts.fleet_chart(range_key=range_key))
