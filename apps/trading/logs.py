"""Bot logs: a bot worker's log lines in the database, for the bot page (and its live tail), kept for a while.

Only a bot worker installs the handler (apps.trading.tasks, at worker_ready, knowing its bot id). The handler
carries its own RedactingFilter, so a record is masked before the handler sees it whatever other handlers did
first: no unredacted line is ever queued. `emit` never touches the database and never waits: it appends to a
small in-memory queue (bounded: when full the oldest line is dropped and counted) and a thread of the handler's
own writes the queue every FLUSH_EVERY_S seconds, or as soon as BATCH_LINES wait, on that thread's own database
connection (Django's connections are per thread), then publishes one "bot_log" live event per batch.
A tick therefore never waits for the database on account of its logging.

The control worker deletes lines older than BOT_LOG_RETENTION_DAYS (bot_log_purge, scheduled by beat).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from apps.core.input_validation import InputError
from apps.core.logging import RedactingFilter
from apps.events.services import publish
from apps.trading.models import BotLogLine

logger = logging.getLogger(__name__)

BATCH_LINES = 100
FLUSH_EVERY_S = 0.5
QUEUE_MAX = 2000  # about 20 batches: a database outage of ~10 s at full speed before lines are dropped
PAGE_LINES = 200
PURGE_BATCH = 5000
# The page's level filter: "warning" shows warnings and worse.
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# PostgreSQL refuses NUL in text, and psycopg cannot encode a lone surrogate (from undecodable bytes).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
LOGGER_MAX = BotLogLine._meta.get_field("logger").max_length or 100


def storable(text: str, *, max_length: int = BotLogLine.MESSAGE_MAX) -> str:
    """`text` as PostgreSQL takes it: NUL and lone surrogates become U+FFFD; cut to the column (marked)."""
    text = _UNSTORABLE.sub("\ufffd", text)
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text


@dataclass(frozen=True)
class Line:
    at: datetime
    level: int
    logger: str
    message: str


class BotLogHandler(logging.Handler):
    """Queues a bot worker's (redacted) records; a thread of its own stores them in batches."""

    def __init__(
        self,
        *,
        bot_id: int,
        level: int | str = logging.INFO,
        queue_max: int = QUEUE_MAX,
        batch_lines: int = BATCH_LINES,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        super().__init__(level)
        # Here and not only on the console handler: this handler must never depend on another's filter
        # having run first (handlers run in the order they were added; a record may reach this one alone).
        self.addFilter(RedactingFilter())
        self.addFilter(_celery_chatter)
        self.bot_id = bot_id
        self.queue_max = queue_max
        self.batch_lines = batch_lines
        self.flush_every_s = flush_every_s
        self.dropped = 0  # every line lost since the start: queue full, or the database refused a batch
        self._unreported = 0  # dropped lines not yet noted in a stored line
        self._lines: deque[Line] = deque()
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    # -- the logging side: never blocks on anything but a short in-memory lock ---------------------

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread:
            # The writer's own records (a database error, an unannounced event): the console has them;
            # queueing them here could feed a loop.
            return
        try:
            # After RedactingFilter: msg holds the masked text, args are gone, exc_text is masked.
            message = record.getMessage()
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            line = Line(
                at=datetime.fromtimestamp(record.created, UTC),
                level=record.levelno,
                logger=storable(record.name, max_length=LOGGER_MAX),
                message=storable(message),
            )
        except Exception:
            self.handleError(record)
            return
        with self._queue_lock:
            if len(self._lines) >= self.queue_max:
                self._lines.popleft()  # the oldest goes: the newest say what is happening now
                self.dropped += 1
                self._unreported += 1
            self._lines.append(line)
            full = len(self._lines) >= self.batch_lines
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._queue_lock:
            return len(self._lines)

    # -- the writer thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"bot-{self.bot_id}-logs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.flush_every_s)
                self._wake.clear()
                if self.write_pending():
                    # Lines come now and then: no database session held between (a worker keeps one, its ticks').
                    connections.close_all()
            self.write_pending()  # what was logged while stopping (the worker's last lines)
        finally:
            connections.close_all()  # this thread's connections only (they are per thread)

    def write_pending(self) -> int:
        """Store everything queued now, batch by batch; the number of lines stored."""
        stored = 0
        while True:
            with self._queue_lock:
                batch = [self._lines.popleft() for _ in range(min(self.batch_lines, len(self._lines)))]
                dropped, self._unreported = self._unreported, 0
            if not batch and not dropped:
                return stored
            stored += self._write(batch, dropped)

    def _write(self, batch: list[Line], dropped: int) -> int:
        if dropped:
            note = f"{dropped} log line(s) dropped before this one: the bot logged faster than they could be stored"
            batch.append(Line(at=timezone.now(), level=logging.WARNING, logger=__name__, message=note))
        try:
            close_old_connections()  # a connection the database closed (restart, idle timeout) is replaced
            with transaction.atomic():
                rows = BotLogLine.objects.bulk_create(
                    [
                        BotLogLine(
                            bot_id=self.bot_id, created_at=ln.at, level=ln.level, logger=ln.logger, message=ln.message
                        )
                        for ln in batch
                    ]
                )
                publish(kind="bot_log", bot_id=self.bot_id, data={"lines": [line_json(row) for row in rows]})
        except Exception as exc:
            # These lines are lost (the worker's log file still has them); the next stored batch says how many.
            with self._queue_lock:
                self.dropped += len(batch) - (1 if dropped else 0)
                self._unreported += len(batch) - (1 if dropped else 0) + dropped
            if not self._failing:
                logger.warning("bot %s: could not store its log lines (%s)", self.bot_id, type(exc).__name__)
            self._failing = True
            return 0
        if self._failing:
            logger.warning("bot %s: storing its log lines again", self.bot_id)
        self._failing = False
        return len(rows)

    def flush(self) -> None:
        self._wake.set()  # never waits: logging calls flush from any thread

    def close(self) -> None:
        """Stop the writer after it stored what is queued (logging.shutdown calls this at exit)."""
        thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        elif thread is None:
            self.write_pending()
        super().close()


def _celery_chatter(record: logging.LogRecord) -> bool:
    # Celery logs every task received and succeeded at INFO: for a bot that is two lines a tick, which
    # would drown what the bot says. Its warnings and errors (a task that crashed) are kept.
    return record.levelno >= logging.WARNING or not record.name.startswith("celery")


def line_json(row: BotLogLine) -> dict[str, object]:
    """A stored line as the bot page's live tail receives it."""
    at = row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": row.pk,
        "at": at,
        "level": row.level_name,
        "levelno": row.level,
        "logger": row.logger,
        "message": row.message,
    }


# -- installing it in a bot worker --------------------------------------------------------------

_installed: BotLogHandler | None = None
# Celery's loggers do not propagate to the root logger (settings.LOGGING): the handler goes on both.
_LOGGERS = ("", "celery")


def bot_log_install(*, bot_id: int) -> BotLogHandler:
    """Store this process's log lines as bot `bot_id`'s (call once, in the bot's worker, at startup)."""
    global _installed
    if _installed is not None:
        return _installed
    handler = BotLogHandler(bot_id=bot_id, level=settings.BOT_LOG_LEVEL)
    handler.start()
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    _installed = handler
    return handler


def bot_log_uninstall() -> None:
    """Detach the handler and store what it still holds (the worker is shutting down)."""
    global _installed
    handler, _installed = _installed, None
    if handler is None:
        return
    for name in _LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()


# -- reading and purging ------------------------------------------------------------------------


def bot_log_level_parse(raw: str | None) -> int | None:
    """The page's ?level= (a name, any case; empty or absent: every level) as the lowest level number shown."""
    if raw is None or raw.strip() == "":
        return None
    level = LEVELS.get(raw.strip().lower())
    if level is None:
        raise InputError(f"Unknown log level {raw[:20]!r}: choose one of {', '.join(LEVELS)}.")
    return level


def bot_log_lines(*, bot_id: int, min_level: int | None = None, limit: int = PAGE_LINES) -> list[BotLogLine]:
    """The bot's newest lines (at `min_level` and above), newest first."""
    lines = BotLogLine.objects.filter(bot_id=bot_id)
    if min_level is not None:
        lines = lines.filter(level__gte=min_level)
    return list(lines.order_by("-created_at", "-id")[:limit])


def bot_log_purge(*, now: datetime | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete lines older than BOT_LOG_RETENTION_DAYS, `batch` rows per statement (short locks, small WAL bursts)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.BOT_LOG_RETENTION_DAYS)
    total = 0
    while True:
        ids = list(BotLogLine.objects.filter(created_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:batch])
        if not ids:
            break
        deleted, _ = BotLogLine.objects.filter(id__in=ids).delete()
        total += deleted
        if len(ids) < batch:
            break
    if total:
        logger.info("bot logs: deleted %s line(s) older than %s days", total, settings.BOT_LOG_RETENTION_DAYS)
    return total
