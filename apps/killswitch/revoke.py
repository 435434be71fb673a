"""The kill's work on processes: revoke the bots' Vault identities, wait for the fleet to stop their workers,
purge their queues.

Revocation reads each bot's token accessor from the database, so it works with Redis down. Two runs (or the
fleet) may revoke the same bot at the same moment: what the other already revoked or destroyed is done, not a
problem.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from django.conf import settings

from apps.bots.fleet import GRACE_S
from apps.bots.models import Bot
from apps.core.words import counted
from apps.vault import client as vault

logger = logging.getLogger(__name__)

REVOKE_THREADS = 8
SECRET_ID_ATTEMPTS = 4
REVOKE_ATTEMPTS = 4
# The fleet polls about every second and gives a worker GRACE_S to finish its tick before SIGKILL.
STOP_WAIT_S = GRACE_S + 5.0
STOP_POLL_S = 0.1
STOPPED = (Bot.Observed.STOPPED, Bot.Observed.HALTED)
# kombu's Redis transport keeps a queue as a list named after it, plus one list per priority step.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


@dataclass
class RevokeOutcome:
    revocation: str = ""  # "revoked", "gone" (expired or revoked already), "refused" (not this bot's), "" (none)
    secret_ids: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Revoked:
    """What the revoke step did: its line in the report, its problems, the accessors it dealt with."""

    detail: str
    problems: list[str]
    accessors: set[str]


def bots_revoke(pv: vault.ProcessVault, bots: Iterable[Bot]) -> Revoked:
    """Revoke each bot's token by the accessor its worker stored in the database; destroy its SecretIDs."""
    chosen = [b for b in bots if b.mode == Bot.Mode.LIVE or b.vault_token_accessor]
    if not chosen:
        return Revoked("no live bot", [], set())
    with ThreadPoolExecutor(min(REVOKE_THREADS, len(chosen)), thread_name_prefix="kill-revoke") as pool:
        outcomes = list(pool.map(lambda bot: bot_revoke(pv, bot), chosen))
    problems = [p for o in outcomes for p in o.problems]
    tokens = [o.revocation for o in outcomes]
    detail = f"{counted(tokens.count('revoked'), 'bot token')} revoked"
    if tokens.count("gone"):
        detail += f", {tokens.count('gone')} already revoked or expired"
    if tokens.count("refused"):
        detail += f", {counted(tokens.count('refused'), 'token')} refused (not the bot's own)"
    # A SecretID is what a starting worker logs in to Vault with: to people, an unused bot credential.
    detail += f"; {counted(sum(o.secret_ids for o in outcomes), 'unused bot credential')} destroyed"
    failed = sum(1 for o in outcomes if o.problems)
    detail += f"; {counted(failed, 'bot')} not fully revoked" if failed else ""
    return Revoked(detail, problems, {b.vault_token_accessor for b in chosen})


def bot_revoke(pv: vault.ProcessVault, bot: Bot, *, secret_ids: bool = True) -> RevokeOutcome:
    outcome = RevokeOutcome()
    accessor = bot.vault_token_accessor
    if accessor:
        outcome.revocation = _token_revoke(pv, bot, accessor, outcome.problems)
    if secret_ids and bot.mode == Bot.Mode.LIVE:
        error = _secret_ids_destroy(pv, bot, outcome)
        if error is not None:
            outcome.problems.append(f"revoke: unused credentials of bot #{bot.pk} not destroyed: {error}"[:300])
    return outcome


def _secret_ids_destroy(pv: vault.ProcessVault, bot: Bot, outcome: RevokeOutcome) -> vault.VaultError | None:
    """Destroy the bot's unused SecretIDs; None once none is left, else the last error.

    Another run (or the fleet) may destroy them at the same time, so an accessor listed a moment ago can be
    gone when destroyed: that is not a problem as long as none is left in the end, so list again and retry.
    """
    error: vault.VaultError | None = None
    for attempt in range(SECRET_ID_ATTEMPTS):
        try:
            outcome.secret_ids += pv.bot_secret_ids_destroy(bot.pk)
            return None
        except vault.VaultError as exc:
            error = exc
        try:
            if not pv.bot_secret_id_accessors(bot.pk):
                return None
        except vault.VaultError as exc:
            error = exc
        time.sleep(0.05 * (attempt + 1))
    return error


def _token_revoke(pv: vault.ProcessVault, bot: Bot, accessor: str, problems: list[str]) -> str:
    # The accessor is written by the bot's worker: make sure it names a token of this bot's role before
    # revoking, or a compromised worker could have the kill revoke another process's token.
    try:
        info = pv.token_lookup_accessor(accessor)
    except (vault.VaultForbidden, vault.VaultUnavailable) as exc:
        # Looked up while another run (or the fleet) revokes it, OpenBao may refuse the lookup: gone is done.
        if _token_gone(pv, accessor):
            return "gone"
        problems.append(f"revoke: token of bot #{bot.pk} not revoked: {exc}"[:300])
        return ""
    except vault.VaultError:
        return "gone"  # expired, or revoked by the fleet already
    if (info.get("meta") or {}).get("role_name") != bot.vault_role:
        logger.error("kill: bot %s's stored accessor is not a token of %s; not revoking it", bot.pk, bot.vault_role)
        problems.append(f"revoke: bot #{bot.pk}'s stored token accessor is not its own; refused")
        return "refused"
    error: vault.VaultError | None = None
    for attempt in range(REVOKE_ATTEMPTS):
        try:
            pv.token_revoke_accessor(accessor)
            return "revoked"
        except vault.VaultError as exc:
            error = exc
        # Another run (or the fleet) may be revoking the same token right now: Vault refuses the second
        # revocation, and the token disappears a moment later. That is not a problem once it is gone.
        if _token_gone(pv, accessor):
            return "gone"
        time.sleep(0.05 * (attempt + 1))
    problems.append(f"revoke: token of bot #{bot.pk} not revoked: {error}"[:300])
    return ""


def _token_gone(pv: vault.ProcessVault, accessor: str) -> bool:
    try:
        pv.token_lookup_accessor(accessor)
    except (vault.VaultForbidden, vault.VaultUnavailable):
        return False  # cannot tell: keep the problem
    except vault.VaultError:
        return True
    return False


@dataclass
class Stopped:
    """What the stop step saw: its line in the report, its problems, and whether every worker is gone."""

    detail: str
    problems: list[str]
    workers_gone: bool
    stopped: int = 0  # worker processes that were running and the fleet reported stopped


def workers_wait(
    bots: list[Bot],
    *,
    pv: vault.ProcessVault,
    revoked: Callable[[], set[str]],
    running_at_press: Collection[int] = (),
) -> Stopped:
    """Wait (at most STOP_WAIT_S) until the fleet reports every affected bot's worker stopped.

    Stopping is the fleet supervisor's work (the press set every affected bot to stopped); a worker that
    logged in after the revoke step read the accessors is revoked here too. `revoked` waits for the revoke
    step (which runs beside this one) and returns the accessors it dealt with.
    """
    started = time.monotonic()
    ids = [b.pk for b in bots]
    had = [b.pk for b in bots if b.observed_state not in STOPPED or b.pk in running_at_press]
    if not had:
        return Stopped(f"no bot worker was running ({len(ids)} bot(s) already stopped)", [], True)
    deadline = started + STOP_WAIT_S
    while True:
        remaining = list(
            Bot.objects.filter(pk__in=ids).exclude(observed_state__in=STOPPED).values_list("pk", "observed_state")
        )
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(STOP_POLL_S)
    problems: list[str] = []
    late = _late_revoke(ids, pv=pv, revoked=revoked(), problems=problems)
    waited = time.monotonic() - started
    if not remaining:
        detail = (
            f"{len(had)} bot worker(s) were running; the fleet reported all stopped after {waited:.1f} s; "
            "0 worker processes remain"
        )
    else:
        states = ", ".join(f"bot #{pk} {state}" for pk, state in remaining)
        detail = (
            f"{len(had)} bot worker(s) were running; {len(remaining)} worker process(es) remain after "
            f"{waited:.0f} s ({states}): is the fleet supervisor running?"
        )
        problems.append(f"stop: {len(remaining)} bot worker(s) not reported stopped ({states})"[:300])
    detail += f"; {late} token(s) reported after the revoke step revoked" if late else ""
    return Stopped(detail, problems, not remaining, len(had) - len(remaining))


def _late_revoke(ids: list[int], *, pv: vault.ProcessVault, revoked: set[str], problems: list[str]) -> int:
    """Revoke tokens of workers that logged in after the revoke step read the accessors."""
    late = [
        b
        for b in Bot.objects.filter(pk__in=ids).exclude(vault_token_accessor="")
        if b.vault_token_accessor not in revoked
    ]
    count = 0
    for bot in late:
        outcome = bot_revoke(pv, bot, secret_ids=False)
        problems.extend(outcome.problems)
        count += outcome.revocation == "revoked"
    return count


def queues_purge(bots: list[Bot]) -> str:
    """Drop the ticks waiting in the bots' queues (Redis down: skipped, the gate refuses them anyway)."""
    names = [name for bot in bots for name in (bot.queue, *(f"{bot.queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS))]
    if not names:
        return "no queues"
    try:
        r = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0, socket_timeout=2.0)
        pipe = r.pipeline()
        for name in names:
            pipe.llen(name)
        lengths = pipe.execute()
        r.delete(*names)
    except redis.RedisError:
        return "skipped: Redis unavailable"
    return f"{sum(int(n) for n in lengths)} queued message(s) purged from {len(bots)} queue(s)"
