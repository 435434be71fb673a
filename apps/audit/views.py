from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.selectors import acting_user
from apps.audit import selectors
from apps.audit.forms import AuditFilterForm
from apps.audit.models import AuditEntry
from apps.audit.services import audit_export_start
from apps.audit.tasks import audit_checkpoint_request
from apps.core.exceptions import ApplicationError

VIEW = "accounts.view_console"
# There is no audit-specific permission: asking for a checkpoint, and reading the user name a
# failed sign-in typed, are for admins, whose role is the one that manages users.
ADMIN = "accounts.manage_users"
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
# Cells a spreadsheet would run as a formula; prefixed with ' in the CSV (the JSON export is exact).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def entry_list_view(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    context: dict[str, object] = {
        "form": form,
        "state": selectors.audit_chain_state(),
        "can_checkpoint": request.user.has_perm(ADMIN),
        "action_names": selectors.audit_action_names(),
    }
    if not form.is_valid():  # nothing is queried with a bad filter
        return render(request, "audit/list.html", context, status=400)
    before, after = form.cursor()
    page = selectors.audit_page(
        form.filters(), before=before, after=after, reveal_typed_usernames=request.user.has_perm(ADMIN)
    )
    context.update(
        page=page,
        newer_query=form.query(after=page.newer_cursor) if page.newer_cursor is not None else None,
        older_query=form.query(before=page.older_cursor) if page.older_cursor is not None else None,
        first_query=form.query() if before is not None or after is not None else None,
        export_query=form.query(),
    )
    return render(request, "audit/list.html", context)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def entry_detail_view(request: HttpRequest, seq: int) -> HttpResponse:
    entry = AuditEntry.objects.filter(seq=seq).first()
    if entry is None:
        raise Http404("No audit entry with that number.")
    if not request.user.has_perm(ADMIN):
        selectors.hide_typed_usernames([entry])
    context = {
        "entry": entry,
        "diff": selectors.data_diff(entry.data),
        "data_json": json.dumps(entry.data, indent=2, sort_keys=True, ensure_ascii=False),
        "checkpoint": selectors.covering_checkpoint(entry.seq),
        "has_newer": AuditEntry.objects.filter(seq=entry.seq + 1).exists(),
    }
    return render(request, "audit/detail.html", context)


def _csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv_chunks(batches: Iterator[list[AuditEntry]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(selectors.EXPORT_FIELDS)
    for batch in batches:
        for entry in batch:
            record = selectors.entry_record(entry)
            record["data"] = json.dumps(record["data"], sort_keys=True, ensure_ascii=False)
            writer.writerow([_csv_cell(record[name]) for name in selectors.EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _json_chunks(batches: Iterator[list[AuditEntry]]) -> Iterator[str]:
    """One JSON array, streamed: "[", the entries separated by commas, "]"."""
    yield "["
    first = True
    for batch in batches:
        parts = []
        for entry in batch:
            text = json.dumps(selectors.entry_record(entry), cls=DjangoJSONEncoder, ensure_ascii=False)
            parts.append(("\n" if first else ",\n") + text)
            first = False
        yield "".join(parts)
    yield "\n]\n"


async def _async_chunks(make: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
    # Under ASGI, Django would read a synchronous iterator to its end before sending a byte;
    # an async one streams. Each step runs in the thread that holds the database connection.
    chunks = await sync_to_async(make)()
    step = sync_to_async(lambda: next(chunks, None))
    while (chunk := await step()) is not None:
        yield chunk


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def export_view(request: HttpRequest, fmt: str) -> HttpResponseBase:
    if fmt not in EXPORT_FORMATS:
        raise Http404("Unknown export format.")
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return render(
            request,
            "audit/list.html",
            {"form": form, "state": selectors.audit_chain_state(), "can_checkpoint": request.user.has_perm(ADMIN)},
            status=400,
        )
    filters = form.filters()
    upto = audit_export_start(actor=acting_user(request), filters=filters, fmt=fmt, request=request)
    chunker = _csv_chunks if fmt == "csv" else _json_chunks

    reveal = request.user.has_perm(ADMIN)

    def make() -> Iterator[str]:
        return chunker(selectors.audit_export_batches(filters, upto=upto, reveal_typed_usernames=reveal))

    content = _async_chunks(make) if isinstance(request, ASGIRequest) else make()
    response = StreamingHttpResponse(content, content_type=EXPORT_FORMATS[fmt])
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}-upto-{upto}.{fmt}"'
    return response


@never_cache
@permission_required(ADMIN, raise_exception=True)
@require_POST
def checkpoint_request_view(request: HttpRequest) -> HttpResponse:
    try:
        audit_checkpoint_request(actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Checkpoint requested: the control worker signs it in a moment.")
    return redirect("audit:list")
