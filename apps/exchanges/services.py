"""Exchange accounts: validate a key with the exchange, keep its secret only in Vault, rotate, delete, check.

The web process writes secrets with its own token (create/update only) and never reads them
back; checks of a stored key run on the control worker, whose token may read.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac

from apps.accounts.models import User
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount, ExchangeAuthFailure
from apps.vault import client as vault

logger = logging.getLogger(__name__)

WITHDRAW_REFUSAL = (
    "This key can withdraw funds, so it was not saved. If this console or its server were ever "
    "compromised, a key that can withdraw lets an attacker move your money off the exchange, with no "
    "undo. On the exchange's API management page, edit the key, turn off withdrawals (on Binance: untick "
    "'Enable Withdrawals'), save, and add the key again."
)
NO_TRADE_REFUSAL = (
    "This key cannot trade, so it was not saved. On the exchange's API management page enable spot "
    "trading for the key (on Binance: 'Enable Spot & Margin Trading') and add it again."
)
UNVERIFIABLE_REFUSAL = (
    "This exchange does not tell whether a key can withdraw. Make sure withdrawals are disabled for this "
    "key on the exchange, then tick the confirmation box."
)
NO_IP_WARNING = (
    "This key is not restricted to your server's IP address. Restricting it on the exchange means a "
    "stolen copy is useless elsewhere."
)


@dataclass
class KeyCheck:
    """What the exchange told us about a key."""

    can_trade: bool | None = None
    can_withdraw: bool | None = None
    ip_restricted: bool | None = None
    warnings: list[str] = field(default_factory=list)


def key_digest(api_key: str) -> str:
    # An HMAC, not the key: it lets us notice one key used by two accounts without storing the key.
    return salted_hmac("botconsole.exchange-key", api_key, algorithm="sha256").hexdigest()


def exchange_key_check(*, exchange_id: str, credentials: dict[str, str]) -> KeyCheck:
    """Ask the exchange whether the key authenticates and what it may do. Raises ExchangeError."""
    exchange = port.Exchange(exchange_id=exchange_id, credentials=credentials)
    try:
        permissions = exchange.key_permissions()  # authenticates: a wrong key or secret fails here
    finally:
        exchange.close()
    check = KeyCheck(
        can_trade=permissions.can_trade,
        can_withdraw=permissions.can_withdraw,
        ip_restricted=permissions.ip_restricted,
    )
    if check.ip_restricted is False:
        check.warnings.append(NO_IP_WARNING)
    return check


def _validate_credentials(exchange_id: str, credentials: dict[str, str]) -> dict[str, str]:
    if exchange_id not in port.supported_exchanges():
        raise ApplicationError(f"Unknown exchange {exchange_id!r}.")
    needed = port.required_credentials(exchange_id)
    missing = [name for name in needed if not credentials.get(name, "").strip()]
    if missing:
        raise ApplicationError(f"This exchange needs: {', '.join(missing)}.")
    return {name: credentials[name].strip() for name in needed}


def _judge(check: KeyCheck, *, attested_no_withdrawals: bool) -> str:
    """Refuse a key that can withdraw or cannot trade; returns how withdrawals were established."""
    if check.can_withdraw:
        raise ApplicationError(WITHDRAW_REFUSAL)
    if check.can_trade is False:
        raise ApplicationError(NO_TRADE_REFUSAL)
    if check.can_withdraw is None:
        if not attested_no_withdrawals:
            raise ApplicationError(UNVERIFIABLE_REFUSAL)
        return ExchangeAccount.Withdrawals.ATTESTED
    return ExchangeAccount.Withdrawals.DISABLED


def _check_or_refuse(exchange_id: str, credentials: dict[str, str], attested: bool) -> tuple[KeyCheck, str]:
    try:
        check = exchange_key_check(exchange_id=exchange_id, credentials=credentials)
    except port.ExchangeError as exc:
        raise ApplicationError(f"{exc.message} Nothing was saved.") from None
    return check, _judge(check, attested_no_withdrawals=attested)


def _duplicate_account(digest: str, exclude: uuid.UUID | None = None) -> ExchangeAccount | None:
    others = ExchangeAccount.objects.filter(key_digest=digest)
    return (others.exclude(id=exclude) if exclude else others).first()


def exchange_account_create(
    *,
    label: str,
    exchange_id: str,
    credentials: dict[str, str],
    attested_no_withdrawals: bool,
    actor: User | str,
    request: HttpRequest | None = None,
    process_vault: vault.ProcessVault | None = None,
) -> tuple[ExchangeAccount, list[str]]:
    """Validate the key with the exchange, store the secret in Vault, keep metadata. Returns warnings."""
    label = label.strip()
    if not label:
        raise ApplicationError("Give the account a label.")
    if ExchangeAccount.objects.filter(label__iexact=label).exists():
        raise ApplicationError("An account with that label already exists.")
    credentials = _validate_credentials(exchange_id, credentials)
    digest = key_digest(credentials["apiKey"])
    if _duplicate_account(digest):
        raise ApplicationError("This API key is already used by another account; give each account its own key.")
    check, withdrawals = _check_or_refuse(exchange_id, credentials, attested_no_withdrawals)

    account = ExchangeAccount(
        label=label,
        exchange_id=exchange_id,
        key_fingerprint=credentials["apiKey"][-4:],
        key_digest=digest,
        withdrawals=withdrawals,
        ip_restricted=check.ip_restricted,
        created_by=actor if isinstance(actor, User) else None,
        last_check_at=timezone.now(),
        last_check_ok=True,
        last_check_message="Key accepted when added.",
    )
    pv = process_vault or vault.from_settings()
    # Secret first, under a fresh id: if the database write then fails, the secret is removed again.
    account.kv_version = pv.kv_write(account.vault_path, credentials)
    try:
        with transaction.atomic():
            account.save(force_insert=True)
            record(
                actor=actor,
                action="exchange_account.created",
                target=account,
                request=request,
                data={
                    "label": label,
                    "exchange": exchange_id,
                    "fingerprint": account.key_fingerprint,
                    "withdrawals": withdrawals,
                    "ip_restricted": check.ip_restricted,
                },
            )
    except BaseException:
        pv.kv_destroy(account.vault_path)
        raise
    return account, check.warnings


def exchange_account_rotate(
    *,
    account: ExchangeAccount,
    credentials: dict[str, str],
    attested_no_withdrawals: bool,
    actor: User | str,
    request: HttpRequest | None = None,
    process_vault: vault.ProcessVault | None = None,
) -> list[str]:
    """Replace the key: validated like a new one, written as a new KV version."""
    credentials = _validate_credentials(account.exchange_id, credentials)
    digest = key_digest(credentials["apiKey"])
    if _duplicate_account(digest, exclude=account.id):
        raise ApplicationError("This API key is already used by another account; give each account its own key.")
    check, withdrawals = _check_or_refuse(account.exchange_id, credentials, attested_no_withdrawals)
    before = account.key_fingerprint
    pv = process_vault or vault.from_settings()
    with transaction.atomic():
        account.kv_version = pv.kv_write(account.vault_path, credentials)
        account.key_fingerprint = credentials["apiKey"][-4:]
        account.key_digest = digest
        account.withdrawals = withdrawals
        account.ip_restricted = check.ip_restricted
        account.rotated_at = timezone.now()
        account.last_check_at, account.last_check_ok = timezone.now(), True
        account.last_check_message = "Key accepted when rotated."
        account.save()
        record(
            actor=actor,
            action="exchange_account.rotated",
            target=account,
            request=request,
            data={
                "before": {"fingerprint": before},
                "after": {"fingerprint": account.key_fingerprint},
                "kv_version": account.kv_version,
            },
        )
    return check.warnings


def exchange_account_delete(
    *,
    account: ExchangeAccount,
    actor: User | str,
    request: HttpRequest | None = None,
    process_vault: vault.ProcessVault | None = None,
) -> None:
    """Delete the account and destroy every version of its secret; refused while a bot uses it."""
    pv = process_vault or vault.from_settings()
    label, path = account.label, account.vault_path  # delete() clears the instance's pk
    try:
        with transaction.atomic():
            record(
                actor=actor,
                action="exchange_account.deleted",
                target=account,
                request=request,
                data={"label": label, "exchange": account.exchange_id, "fingerprint": account.key_fingerprint},
            )
            account.delete()  # bots reference accounts with PROTECT: a used account cannot go
            pv.kv_destroy(path)
    except ProtectedError:
        raise ApplicationError(f"{label} is used by a bot; delete or re-point those bots first.") from None


def key_rejection_note(*, account_id: Any, bot_id: int | None, error: Exception) -> None:
    """An exchange refused this account's key (authentication or permission); the auth-errors breaker counts these.

    Only the error's kind is kept: its text may quote the signed request.
    """
    ExchangeAuthFailure.objects.create(account_id=account_id, bot_id=bot_id, error=type(error).__name__[:60])


# -- checks of stored keys (control worker) ---------------------------------------------------


def exchange_account_check(*, account: ExchangeAccount, process_vault: vault.ProcessVault | None = None) -> list[str]:
    """Re-check a stored key with the exchange; returns the problems found (each also alerted)."""
    pv = process_vault or vault.from_settings()
    problems: list[str] = []
    try:
        credentials = {k: str(v) for k, v in pv.kv_read(account.vault_path).items()}
        check = exchange_key_check(exchange_id=account.exchange_id, credentials=credentials)
    except (port.ExchangeError, vault.VaultError) as exc:
        problems.append(str(exc))
        check = None
        if isinstance(exc, port.KeyRejected | port.PermissionRefused):
            key_rejection_note(account_id=account.pk, bot_id=None, error=exc)
    if check is not None:
        if check.can_withdraw:
            problems.append("The key can now withdraw funds. Disable withdrawals for it on the exchange at once.")
        if check.can_trade is False:
            problems.append("The key can no longer trade.")
        account.ip_restricted = check.ip_restricted
    if account.key_is_old:
        problems.append(f"The key is {account.key_age.days} days old; rotate it.")
    if _duplicate_account(account.key_digest, exclude=account.id):
        problems.append("The same API key is used by another account.")
    account.last_check_at = timezone.now()
    account.last_check_ok = not problems
    account.last_check_message = " ".join(problems)[:500] or "Key OK."
    account.save(update_fields=["last_check_at", "last_check_ok", "last_check_message", "ip_restricted"])
    record(
        actor="system:control-worker",
        action="exchange_account.checked",
        target=account,
        data={"ok": not problems, "problems": problems},
    )
    for problem in problems:
        alert_raise(
            kind="key_check_failed",
            severity="critical",
            target=account,
            message=f"Exchange account {account.label} (…{account.key_fingerprint}): {problem}",
            data={"account": str(account.id)},
        )
    return problems


def exchange_accounts_hygiene(*, process_vault: vault.ProcessVault | None = None) -> dict[str, list[str]]:
    """The daily key-hygiene run over every account."""
    pv = process_vault or vault.from_settings()
    return {
        str(account.id): exchange_account_check(account=account, process_vault=pv)
        for account in ExchangeAccount.objects.all()
    }
