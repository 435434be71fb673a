"""A running bot's Vault identity: issued by the fleet supervisor, reported by its worker, revoked when it ends.

Each live bot's worker gets its own AppRole `bot-<id>`, whose policy reads that one account's secret; the
supervisor hands the worker only the role id and a response-wrapped SecretID, and never sees a SecretID or a bot
token itself. The worker reports its token's accessor (never the token), kept in the database so that the kill
switch and the supervisor revoke by it even with Redis down.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from apps.bots.models import Bot
from apps.vault import client as vault

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BotIdentity:
    role_id: str
    wrapping_token: str
    secret_id_accessor: str

    def __repr__(self) -> str:  # keep the wrapping token out of reprs and logs
        return f"BotIdentity(role_id={self.role_id!r})"


def bot_identity_issue(pv: vault.ProcessVault, bot: Bot) -> BotIdentity:
    """Write the bot's policy and AppRole, and issue one response-wrapped SecretID for its new worker."""
    # The policy first, so the role never points at a policy that does not exist.
    pv.policy_write(bot.vault_role, vault.bot_policy_text(str(bot.account_id)))
    pv.bot_role_write(bot.pk)
    role_id = pv.bot_role_id(bot.pk)
    wrapped = pv.bot_secret_id_wrapped(bot.pk)
    return BotIdentity(role_id, wrapped.wrapping_token, wrapped.secret_id_accessor)


def token_accessor_key(bot_id: int) -> str:
    """Redis key where a bot worker reports its token's accessor (never the token)."""
    return f"botconsole:bot:{bot_id}:token-accessor"


def token_accessor_report(bot_id: int, accessor: str, *, ttl_s: int) -> None:
    """A bot worker reports its token's accessor once logged in (never the token).

    The database copy is the one that counts: the kill switch and the supervisor revoke by it even
    with Redis down. The Redis copy (expiring with the token) is kept for tools that look there.
    """
    Bot.objects.filter(pk=bot_id).update(vault_token_accessor=accessor)
    try:
        redis_client().set(token_accessor_key(bot_id), accessor, ex=ttl_s)
    except redis.RedisError as exc:
        logger.warning("bot %s: token accessor not copied to Redis (%s)", bot_id, type(exc).__name__)


def token_accessor_of(bot_id: int) -> str:
    """The accessor the bot's worker reported: from the database, else from Redis (empty if none)."""
    stored = Bot.objects.filter(pk=bot_id).values_list("vault_token_accessor", flat=True).first()
    if stored:
        return str(stored)
    try:
        raw = redis_client().get(token_accessor_key(bot_id))
    except redis.RedisError as exc:
        logger.warning("bot %s: cannot read its token accessor from Redis: %s", bot_id, type(exc).__name__)
        return ""
    return raw.decode() if isinstance(raw, bytes) else str(raw or "")


def redis_client() -> redis.Redis:
    # Bounded: with Redis unreachable, a worker's bootstrap and the supervisor's loop go on without it.
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=5.0)


def bot_identity_revoke(pv: vault.ProcessVault, bot_id: int, secret_id_accessor: str = "") -> None:
    """Revoke the bot's token, destroy its SecretID, delete its role and policy.

    Each step is attempted even if an earlier one fails; failures are logged (a token left
    behind still expires within its 15 minute TTL and cannot be renewed without its role).
    """
    accessor = token_accessor_of(bot_id)
    role = vault.bot_role(bot_id)
    steps: list[tuple[str, Any]] = []
    if accessor:
        steps.append(("revoke token", lambda: _bot_token_revoke(pv, role, accessor)))
    if secret_id_accessor:
        steps.append(("destroy secret id", lambda: pv.bot_secret_id_destroy(bot_id, secret_id_accessor)))
    steps += [
        ("delete role", lambda: pv.bot_role_delete(bot_id)),
        ("delete policy", lambda: pv.policy_delete(role)),
    ]
    for what, step in steps:
        try:
            step()
        except vault.VaultError as exc:
            # A SecretID the worker logged in with is already gone (single use): expected.
            level = logging.DEBUG if what == "destroy secret id" else logging.WARNING
            logger.log(level, "bot %s: %s: %s", bot_id, what, exc)
    if accessor:
        # Only the accessor revoked here: a newer worker may have reported its own meanwhile.
        Bot.objects.filter(pk=bot_id, vault_token_accessor=accessor).update(vault_token_accessor="")
    with contextlib.suppress(redis.RedisError):
        redis_client().delete(token_accessor_key(bot_id))


def _bot_token_revoke(pv: vault.ProcessVault, role: str, accessor: str) -> None:
    # The accessor comes from the worker: make sure it names a token of this bot's role
    # before revoking, or a compromised worker could have us revoke another process's token.
    try:
        info = pv.token_lookup_accessor(accessor)
    except vault.VaultError:
        return  # already revoked or expired
    if (info.get("meta") or {}).get("role_name") != role:
        logger.error("refusing to revoke a token that is not %s's (reported by its worker)", role)
        return
    pv.token_revoke_accessor(accessor)
