"""Reviews: balance snapshots (control worker), asking for one (web), exports and sign-offs."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import key_rejection_note
from apps.reviews.figures import num
from apps.reviews.models import BalanceSnapshot, ReviewSignoff
from apps.reviews.periods import Period
from apps.reviews.selectors import review_build, review_digest
from apps.vault import client as vault

logger = logging.getLogger(__name__)

ACTOR = "system:control-worker"
NOTE_MAX = 2000


def review_target(period: Period) -> tuple[str, str]:
    return "reviews.review", period.target_id


# -- balance snapshots (control worker: it alone may read the keys) ----------------------------


def transfer_record(transfer: port.Transfer) -> dict[str, Any]:
    """A deposit or withdrawal as a snapshot keeps it."""
    at = dt.datetime.fromtimestamp(transfer.at_ms / 1000, tz=dt.UTC).isoformat() if transfer.at_ms is not None else None
    return {
        "type": transfer.kind,
        "id": transfer.id,
        "currency": transfer.currency,
        "amount": num(transfer.amount) if transfer.amount is not None else "",
        "status": transfer.status,
        "at": at,
    }


def _transfers(exchange: port.Exchange, since: dt.datetime | None) -> tuple[list[dict[str, Any]], str]:
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    transfers, notes = exchange.transfers(since_ms=since_ms)
    return [transfer_record(t) for t in transfers], " ".join(notes)[:300]


def _read_balances(exchange: port.Exchange) -> dict[str, str]:
    amounts = {asset: num(amount) for asset, amount in exchange.balances().total.items()}
    return {asset: amount for asset, amount in sorted(amounts.items()) if amount != "0"}


@dataclass
class _Reading:
    """What one ask of the exchange brought back; `error` set (and the rest empty or partial) if it failed."""

    balances: dict[str, str] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    error: str = ""


def _last_good_snapshot_time(account: ExchangeAccount) -> dt.datetime | None:
    return (
        BalanceSnapshot.objects.filter(account=account, ok=True)
        .order_by("-taken_at", "-id")
        .values_list("taken_at", flat=True)
        .first()
    )


def _read_account(account: ExchangeAccount, pv: vault.ProcessVault, since: dt.datetime | None) -> _Reading:
    """The account's balances and its transfers since `since`, or why they could not be read."""
    reading = _Reading()
    exchange: port.Exchange | None = None
    try:
        credentials = {k: str(v) for k, v in pv.kv_read(account.vault_path).items()}
        exchange = port.Exchange(exchange_id=account.exchange_id, credentials=credentials)
        reading.balances = _read_balances(exchange)
        reading.transfers, reading.note = _transfers(exchange, since)
    except (port.ExchangeError, vault.VaultError) as exc:
        reading.error = (exc.message if isinstance(exc, port.ExchangeError) else f"Vault: {exc}")[:300]
        if isinstance(exc, port.KeyRejected | port.PermissionRefused):
            key_rejection_note(account_id=account.pk, bot_id=None, error=exc)
    except Exception as exc:  # one account's surprise must not cost the others their snapshot
        logger.exception("balance snapshot of %s failed", account.label)
        reading.error = f"Unexpected error: {type(exc).__name__}"  # not its text: it might quote a signed request
    finally:
        if exchange is not None:
            exchange.close()
    return reading


def _snapshot_store(
    *, account: ExchangeAccount, taken_at: dt.datetime, source: str, reading: _Reading, actor: str
) -> BalanceSnapshot:
    """The snapshot row and its audit entry, together or neither."""
    ok = not reading.error
    with transaction.atomic():
        snapshot = BalanceSnapshot.objects.create(
            account=account,
            account_label=account.label,
            taken_at=taken_at,
            source=source,
            ok=ok,
            error=reading.error,
            balances=reading.balances,
            transfers=reading.transfers,
            transfers_note=reading.note,
        )
        # The audit log keeps its own copy: a snapshot row edited later no longer matches it.
        record(
            actor=actor,
            action="review.balance_snapshot",
            target=account,
            data={
                "snapshot": snapshot.pk,
                "source": source,
                "ok": ok,
                "error": reading.error,
                "balances": reading.balances,
                "transfers": len(reading.transfers),
            },
        )
    return snapshot


def balance_snapshot_take(
    *, account: ExchangeAccount, source: str, pv: vault.ProcessVault, actor: str = ACTOR
) -> BalanceSnapshot:
    """Ask the exchange what the account holds now; store it (or why it failed) and audit it."""
    previous = _last_good_snapshot_time(account)
    taken_at = timezone.now()
    reading = _read_account(account, pv, previous)
    snapshot = _snapshot_store(account=account, taken_at=taken_at, source=source, reading=reading, actor=actor)
    if reading.error:
        logger.warning("balance snapshot of %s failed: %s", account.label, reading.error)
    return snapshot


def balance_snapshots_take(
    *, source: str, process_vault: vault.ProcessVault | None = None, actor: str = ACTOR
) -> list[BalanceSnapshot]:
    """A snapshot of every exchange account (one failing does not stop the others)."""
    if source not in BalanceSnapshot.Source.values:
        raise ApplicationError(f"Unknown snapshot source {source!r}.")
    pv = process_vault or vault.from_settings()
    return [
        balance_snapshot_take(account=account, source=source, pv=pv, actor=actor)
        for account in ExchangeAccount.objects.order_by("label")
    ]


# -- exports and sign-offs -------------------------------------------------------------------------


def review_export_record(
    *, actor: AbstractBaseUser, period: Period, fmt: str, digest: str, request: HttpRequest | None = None
) -> None:
    record(
        actor=actor,
        action="review.exported",
        target=review_target(period),
        request=request,
        data={"kind": period.kind, "period": period.key, "format": fmt, "digest": digest},
    )


def review_sign_off(
    *, actor: User, period: Period, seen_digest: str, note: str = "", request: HttpRequest | None = None
) -> ReviewSignoff:
    """Mark a review done, for exactly the data the reviewer saw (its digest); audited.

    Refused when the review changed since the page was shown (the reviewer has not seen the
    change), and when the same reviewer signs an unchanged review twice. A later sign-off of the
    same period (another reviewer, or after a change) is a new one: each is kept.
    """
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise ApplicationError(f"The note is too long ({len(note)} characters; at most {NOTE_MAX}).")
    with transaction.atomic():
        # One sign-off at a time per reviewer: a double-submitted form cannot sign twice.
        list(User.objects.select_for_update().filter(pk=actor.pk).values_list("pk", flat=True))
        digest = review_digest(review_build(period))
        if seen_digest != digest:
            raise ApplicationError(
                "The review changed after the page was shown (new trades, events or balances). "
                "Look at it again, then mark it done."
            )
        if ReviewSignoff.objects.filter(
            period_kind=period.kind, period=period.key, signed_by=actor, digest=digest
        ).exists():
            raise ApplicationError("You have already marked this review done, and nothing has changed since.")
        entry = record(
            actor=actor,
            action="review.signed_off",
            target=review_target(period),
            request=request,
            data={"kind": period.kind, "period": period.key, "digest": digest, "note": note},
        )
        return ReviewSignoff.objects.create(
            period_kind=period.kind,
            period=period.key,
            signed_by=actor,
            signed_at=entry.created_at,
            note=note,
            digest=digest,
            audit_seq=entry.seq,
        )
