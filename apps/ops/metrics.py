"""Prometheus metrics, computed at scrape time from the database and Redis.

Nothing is counted in process memory: the web server runs several processes (and the bot workers
and the control worker are others), so every value is read from the shared state when Prometheus
scrapes, and any web process gives the same answer. Labels carry only fixed vocabularies (states,
modes, statuses, reasons) and queue names: never a user name, a label an operator typed, or a secret.

Access (apps.core.views.metrics): a request from a loopback address that did not come through a
proxy, or one presenting `Authorization: Bearer <token>` whose SHA-256 is METRICS_TOKEN_SHA256.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.http import HttpRequest
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry, AuditVerification
from apps.bots.models import Bot, TradingHalt
from apps.core.net import client_ip
from apps.core.workers import CONTROL_QUEUE
from apps.killswitch.models import BreakerTrip, KillRun
from apps.live.presence import socket_count
from apps.trading.models import GateRefusal, Order

logger = logging.getLogger(__name__)

PREFIX = "botconsole"
# Kill-run durations (request to report), in seconds: the goal is well under one second.
KILL_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

# Headers a reverse proxy adds: a request carrying one came from outside, whatever REMOTE_ADDR says.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")
REDIS_TIMEOUT_S = 2.0


# -- who may scrape ------------------------------------------------------------------------------


def _is_loopback(address: str | None) -> bool:
    return address is not None and ipaddress.ip_address(address).is_loopback


def _bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def metrics_access_allowed(request: HttpRequest) -> bool:
    """A presented token must be right (even from loopback); without one, only a local scraper."""
    token = _bearer_token(request)
    if token is not None:
        expected = str(getattr(settings, "METRICS_TOKEN_SHA256", "") or "").strip().lower()
        if not token or not expected:
            return False
        presented = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(presented, expected)
    if any(request.META.get(header) for header in PROXY_HEADERS):
        return False
    return _is_loopback(client_ip(request))


# -- what is measured ----------------------------------------------------------------------------


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def _database_metrics() -> Iterator[Metric]:
    yield from _bot_metrics()
    yield from _order_metrics()
    yield from _kill_metrics()
    yield from _alert_metrics()
    yield from _audit_metrics()


def _bot_metrics() -> Iterator[Metric]:
    halted = TradingHalt.objects.filter(pk=TradingHalt.SINGLETON_PK, active=True).exists()
    metric = _gauge("trading_halted", "1 while the global trading halt (kill switch) is on.", [])
    metric.add_metric([], 1.0 if halted else 0.0)
    yield metric

    # Every combination is present (zero included), so an alert on "running" sees a drop to 0.
    rows = Bot.objects.values("observed_state", "mode").annotate(n=Count("id"))
    counts = {(row["observed_state"], row["mode"]): row["n"] for row in rows}
    metric = _gauge("bots", "Bots by the state the fleet observes and by mode.", ["state", "mode"])
    for state in Bot.Observed.values:
        for mode in Bot.Mode.values:
            metric.add_metric([state, mode], float(counts.get((state, mode), 0)))
    yield metric
    halted_bots = dict(Bot.objects.filter(halted=True).values_list("mode").annotate(n=Count("id")))
    metric = _gauge("bots_halted", "Bots halted (by the kill switch, a breaker or an operator), by mode.", ["mode"])
    for mode in Bot.Mode.values:
        metric.add_metric([mode], float(halted_bots.get(mode, 0)))
    yield metric


def _order_metrics() -> Iterator[Metric]:
    rows = Order.objects.values("status", "paper").annotate(n=Count("id"))
    orders = {(row["status"], row["paper"]): row["n"] for row in rows}
    metric = _gauge("orders", "Orders by their current status and mode (live or paper).", ["status", "mode"])
    for status in Order.Status.values:
        for mode, paper in ((Bot.Mode.LIVE.value, False), (Bot.Mode.PAPER.value, True)):
            metric.add_metric([status, mode], float(orders.get((status, paper), 0)))
    yield metric

    hour_ago = timezone.now() - timedelta(hours=1)
    refusals = GateRefusal.objects.values("reason").annotate(
        total=Count("id"), last_hour=Count("id", filter=Q(created_at__gte=hour_ago))
    )
    by_reason = {row["reason"]: row for row in refusals}
    total = CounterMetricFamily(
        f"{PREFIX}_gate_refusals", "Orders the order gate refused, by reason.", labels=["reason"]
    )
    recent = _gauge("gate_refusals_last_hour", "Orders the order gate refused in the last hour, by reason.", ["reason"])
    for reason in GateRefusal.Reason.values:
        row = by_reason.get(reason, {})
        total.add_metric([reason], float(row.get("total", 0)))
        recent.add_metric([reason], float(row.get("last_hour", 0)))
    yield total
    yield recent


def _alert_metrics() -> Iterator[Metric]:
    trips = dict(BreakerTrip.objects.filter(cleared_at__isnull=True).values_list("kind").annotate(n=Count("id")))
    metric = _gauge("breaker_trips_open", "Circuit-breaker trips whose condition still holds, by kind.", ["kind"])
    for kind in sorted(trips):
        metric.add_metric([kind], float(trips[kind]))
    yield metric
    alerts = dict(Alert.objects.values_list("severity").annotate(n=Count("id")))
    counter = CounterMetricFamily(f"{PREFIX}_alerts", "Alerts raised, by severity.", labels=["severity"])
    for severity in Alert.Severity.values:
        counter.add_metric([severity], float(alerts.get(severity, 0)))
    yield counter
    pending = Alert.objects.filter(webhook_status=Alert.WebhookStatus.PENDING).count()
    metric = _gauge("alert_webhook_pending", "Alerts waiting to be posted to the alert webhook.", [])
    metric.add_metric([], float(pending))
    yield metric


def _audit_metrics() -> Iterator[Metric]:
    metric = _gauge("audit_entries", "Entries in the audit log (its last sequence number).", [])
    metric.add_metric([], float(AuditEntry.objects.aggregate(m=Max("seq"))["m"] or 0))
    yield metric
    latest = AuditVerification.objects.order_by("-finished_at", "-pk").values_list("status", flat=True).first()
    metric = _gauge("audit_last_verification", "1 for the outcome of the latest audit-log verification.", ["status"])
    for status in AuditVerification.Status.values:
        metric.add_metric([status], 1.0 if status == latest else 0.0)
    yield metric


def _kill_metrics() -> Iterator[Metric]:
    runs = dict(KillRun.objects.values_list("status").annotate(n=Count("id")))
    metric = _gauge("kill_runs", "Kill-switch runs by status.", ["status"])
    for status in KillRun.Status.values:
        metric.add_metric([status], float(runs.get(status, 0)))
    yield metric

    finished = KillRun.objects.filter(finished_at__isnull=False).annotate(
        took=ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField())
    )
    aggregates: dict[str, Any] = {"count": Count("id"), "sum": Sum("took")}
    for i, bound in enumerate(KILL_BUCKETS_S):
        aggregates[f"le{i}"] = Count("id", filter=Q(took__lte=timedelta(seconds=bound)))
    agg = finished.aggregate(**aggregates)
    buckets = [(str(float(bound)), float(agg[f"le{i}"])) for i, bound in enumerate(KILL_BUCKETS_S)]
    buckets.append(("+Inf", float(agg["count"])))
    total: timedelta | None = agg["sum"]
    yield HistogramMetricFamily(
        f"{PREFIX}_kill_duration_seconds",
        "Duration of finished kill-switch runs, from the request to the report.",
        buckets=buckets,
        sum_value=total.total_seconds() if total is not None else 0.0,
    )
    last = finished.order_by("-finished_at", "-pk").values_list("took", flat=True).first()
    metric = _gauge("kill_last_duration_seconds", "Duration of the latest finished kill-switch run.", [])
    if last is not None:
        metric.add_metric([], last.total_seconds())
    yield metric


def celery_queues() -> list[str]:
    """The control queue and one queue per bot, by the names the workers consume."""
    return [CONTROL_QUEUE, *(f"bot.{pk}" for pk in Bot.objects.order_by("pk").values_list("pk", flat=True))]


def _redis_metrics(queues: list[str]) -> Iterator[Metric]:
    metric = _gauge("websocket_clients", "Live-feed websockets open across every web process.", [])
    metric.add_metric([], float(socket_count()))
    yield metric

    r = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
    try:
        # kombu's Redis transport keeps a queue as one list per priority step: the queue's own
        # name for the first, "<name><sep><priority>" for the others.
        pipe = r.pipeline(transaction=False)
        for queue in queues:
            for priority in PRIORITY_STEPS:
                pipe.llen(f"{queue}{RedisChannel.sep}{priority}" if priority else queue)
        pipe.hlen(RedisChannel.unacked_key)
        lengths = pipe.execute()
    finally:
        r.close()
    metric = _gauge("celery_queue_length", "Messages waiting in each Celery queue (every priority).", ["queue"])
    steps = len(PRIORITY_STEPS)
    for i, queue in enumerate(queues):
        metric.add_metric([queue], float(sum(int(n) for n in lengths[i * steps : (i + 1) * steps])))
    yield metric
    metric = _gauge("celery_unacked", "Messages delivered to a worker and not acknowledged yet.", [])
    metric.add_metric([], float(lengths[-1]))
    yield metric


class ConsoleCollector(Collector):
    """Reads every value when collected. A source that fails is reported as down, not as zeros."""

    def collect(self) -> Iterable[Metric]:
        up = _gauge("metrics_source_up", "1 when a source of these metrics answered this scrape.", ["source"])
        sources: list[tuple[str, Callable[[], Iterator[Metric]]]] = [
            ("database", _database_metrics),
            ("redis", lambda: _redis_metrics(_queues_or_control())),
        ]
        gathered: list[Metric] = []
        for source, read in sources:
            try:
                metrics = list(read())
            except Exception as exc:
                # The exception's text may name a host or a DSN; the log gets its type only.
                logger.warning("metrics: %s unavailable (%s)", source, type(exc).__name__)
                up.add_metric([source], 0.0)
                continue
            gathered.extend(metrics)
            up.add_metric([source], 1.0)
        return [*gathered, up]


def _queues_or_control() -> list[str]:
    try:
        return celery_queues()
    except DatabaseError:  # the database is reported down already; the control queue is still worth a look
        return [CONTROL_QUEUE]


def metrics_exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsoleCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
