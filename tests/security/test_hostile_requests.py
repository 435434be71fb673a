"""Every URL of the project, as every role, with hostile values: no 5xx, no technical text, no secret in
any answer, and nothing changed when the answer is a refusal.

The walk (tests/security/walk.py) takes the URL patterns from Django's resolver, fills their path
parameters with real ids and with hostile ones, sends GET with hostile query parameters and POST
with hostile values for every field of the forms that post there (found by reading every page as an
admin, a password-only session and an anonymous visitor see it, the bot form once per strategy) and
for every name the view's module reads from request.GET / request.POST.

For each route and role: the valid request once; fixed hostile plans (NUL, control and bidi
characters, 10,000-character strings, traversal paths and injection text in every field; NaN,
30-digit, exponent, superscript and -0 numbers in every number field and query parameter); each
field alone with a value only it would let through (a 312-character e-mail address, a 31-digit
number); each path parameter alone with hostile values (huge ints, NUL, %2e%2e, 5,000 characters,
RTL override, 9999-12-31, traversal); then `EXAMPLES` plans drawn by hypothesis (derandomized: the
same plans on every run) that mix valid and hostile values. A route that the role cannot reach (the
answer is the login page, before any view code) gets one fixed plan and one hostile path only; a
method that answers 403 or 405 to the valid request gets only the first fixed plan.

Oracle, for every request:
- the status is below 500 and the request raised nothing;
- the body has no traceback or technical error text;
- no secret appears in the body or the headers: the Vault tokens of the test servers, the Redis
  password, the database password, SECRET_KEY, the sandbox key's secret and the canary secret of
  the exchange account (stored in Vault only), the walking client's session key;
- a GET changes nothing (only an export may add its own audit entry);
- a POST that is refused (a 4xx, a redirect to log in or to step-up, an error message, a form
  shown again with errors) changes nothing: the fingerprint of the tables that matter is the same,
  and the audit log gained at most the entries that record a failure (a failed login or code).

Excluded, and why (nothing else is):
- POST to /accounts/logout/ and /admin/logout/ as a signed-in role: it ends the walking client's own
  session, after which the walk would continue as an anonymous user (the anonymous walk covers them).
- The walking user's own session id (sessions/<id>/end/) and own user id (users/<id>/<action>/) are
  not among the "valid" path values: ending or deactivating itself would end the walk the same way.
  Both routes are walked with another session / another user and with hostile ids.
- Nothing about the Django admin: the console's four roles are not Django staff, so the admin answers
  them with its login page, whose form is walked; the fifth role, "superuser", is the first admin that
  `make run` creates, and walks every admin page (read-only: every change there is refused).
- The websocket (/ws/live/) is Channels' route, not the URL resolver's: tests/live covers it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlparse

import pytest
import redis
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from apps.accounts.models import SealedTOTPDevice, UserSession
from apps.accounts.views import USER_ACTIONS
from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_state
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.killswitch.breaker_rules import rules_current
from apps.killswitch.models import BreakerRule, KillRun
from apps.strategies import REGISTRY
from tests.harness import harness
from tests.keys import Key
from tests.people import Person, full_login, make_person, password_login
from tests.security import walk

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "viewer", "operator", "admin", "superuser")
EXAMPLES = 6  # hypothesis plans per route and role, on top of the fixed ones
# Audit entries that record a refusal itself (a wrong password or code); anything else is a change.
FAILURE_ACTIONS = {
    "login.failed",
    "login.otp_failed",
    "auth.step_up_failed",
    "login.locked_out",
    "alert.login_locked_out",
}
EXPORT_ACTIONS = {"audit.exported", "review.exported", "trades.exported"}
OWN_SESSION_ROUTES = {"accounts/logout/", "admin/logout/"}
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")
TECHNICAL = (
    "Traceback (most recent call last)",
    "Exception Value:",
    "Exception Location:",
    "django.db.utils",
    "psycopg",
    "/site-packages/",
    "DataError",
    "IntegrityError",
    "ProgrammingError",
    "OperationalError",
    'File "/',
    "You're seeing this error because you have DEBUG = True",
)
# Parameter names no page or `request.GET[...]` shows but a view reads through a helper.
EXTRA_NAMES = ("next", "strategy", "period", "after", "bot", "reason")

HOSTILE_TEXT = (
    "\x00",
    "nul\x00byte",
    "\x1b[31mred\x1b[0m",
    "bell\x07",
    "\x7f",
    "c1\x85\x9bc1",
    "tab\tand\nnew\r\nline",
    "\u202egnp.exe",
    "\u2066isolated\u2069",
    "\u200f\u061c",
    "x" * 10_000,
    "\u00e9" * 5000,
    "\U0001d518\U0001f600",
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/",
    "..\\..\\win.ini",
    "/etc/passwd\x00.png",
    "1 OR 1=1",
    "' OR '1'='1' --",
    '"; DROP TABLE bots_bot; --',
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "",
    " ",
    "null",
)
HOSTILE_NUMBERS = (
    "9" * 30,
    str(2**63),
    str(2**63 - 1),
    str(-(2**63) - 1),
    str(2**31),
    "-1",
    "0",
    "-0",
    "1e13",
    "1E+400",
    "1e-30",
    "NaN",
    "-nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1_000",
    "0x1F",
    "\u0661\u0662",
    "\u00b2",
    "1.5.5",
    "1,5",
    " 12 ",
    "+5",
    "0.000000001",
    "99999999999999.999999999",
)
# Hostile path values by converter; each is sent in one parameter at a time, the others valid.
HOSTILE_PATH = {
    "int": ("9" * 30, str(2**63), "0"),
    "str": ("\x00", "%2e%2e", "x" * 5000, "\u202e", "9999-12-31", "0000-00-00"),
    "slug": ("x" * 5000, "DROP"),
    "uuid": ("00000000-0000-0000-0000-000000000000",),
    "path": ("../../../../etc/passwd", "\x00", "x" * 5000),
    "regex": ("..", "\x00"),
}

hostile_value = st.one_of(
    st.sampled_from(HOSTILE_TEXT + HOSTILE_NUMBERS),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
)


@dataclass(frozen=True)
class Plan:
    path: dict[str, str]
    query: dict[str, str]
    body: dict[str, str]


@dataclass
class World:
    role: str
    client: Client
    valid: dict[str, dict[str, list[str]]]  # route -> parameter -> real values
    post_fields: dict[str, dict[str, str]]  # route -> field -> a value the page filled in
    get_fields: dict[str, set[str]]  # route -> query parameter names
    secrets: dict[str, str]
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


# -- the world the walk runs in ---------------------------------------------------------------------


def _login(role: str, settings: Any) -> tuple[Client, Person | None]:
    client = Client(raise_request_exception=True)
    if role == "anonymous":
        return client, None
    who = make_person(f"walk-{role}", "admin" if role == "superuser" else role)
    if role == "superuser":  # the first admin, as `make run` creates it (see the module docstring)
        who.user.is_staff = who.user.is_superuser = True
        who.user.save()
    full_login(client, who)
    if role in ("admin", "superuser"):
        response = client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
        assert response["Location"] == "/", "the walking admin could not step up"
    return client, who


def _secrets(key: Key, sandbox_key: tuple[str, str], client: Client) -> dict[str, str]:
    found = {
        "SECRET_KEY": django_settings.SECRET_KEY,
        "database password": str(django_settings.DATABASES["default"].get("PASSWORD") or ""),
        "Redis password": urlparse(os.environ.get("REDIS_URL", "")).password or "",
        "Vault admin token": harness.admin_token,
        "canary exchange secret (in Vault)": key.secret,
        "sandbox key secret": sandbox_key[1],
    }
    found |= {f"Vault token of {name}": issued.token for name, issued in harness.tokens.items()}
    if django_settings.SESSION_COOKIE_NAME in client.cookies:
        found["the walking client's session key"] = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    missing = [name for name, value in found.items() if name != "database password" and len(value) < 8]
    assert not missing, f"the suite must know these secrets to look for them: {missing}"
    return {name: value for name, value in found.items() if value}


def _valid_values(who: Person | None, accounts: tuple[ExchangeAccount, ExchangeAccount]) -> dict[str, list[str]]:
    """Real values for path parameters, by name (the route-specific ones are set by `_valid_for`)."""
    spare, used = accounts
    bots = [str(pk) for pk in Bot.objects.order_by("pk").values_list("pk", flat=True)]
    victim = make_person("walk-victim", "viewer")
    other_session = ""
    if who is not None:
        # The walking user's other session (another browser): the one sessions/<id>/end/ may end.
        other = UserSession.objects.create(user=who.user, session_key=secrets.token_hex(16), ip="127.0.0.2")
        other_session = str(other.pk)
    run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="walk", status=KillRun.Status.DONE)
    yesterday = (timezone.now() - dt.timedelta(days=1)).date()
    device = SealedTOTPDevice.objects.filter(user=victim.user).values_list("pk", flat=True).first()
    return {
        "bot_id": bots,
        "session_id": [other_session or "1"],
        "user_id": [str(victim.user.pk)],
        "seq": [str(AuditEntry.objects.order_by("-seq").values_list("seq", flat=True)[0])],
        "run_id": [str(run.pk)],
        "account_id": [str(spare.pk), str(used.pk)],
        "key": [yesterday.isoformat(), f"{yesterday:%Y-%m}"],
        "kind": ["day", "month"],
        "fmt": ["csv", "json"],
        "action": ["start", "stop", "clone", "paper"],
        "object_id": [str(victim.user.pk)],
        "content_type_id": [str(ContentType.objects.get_for_model(Bot).pk)],
        "pk": [str(device or 1)],
        "id": [str(victim.user.pk)],
        "app_label": ["accounts", "auth"],
        "url": ["nothing/here/"],
    }


def _valid_for(route: walk.Route, by_name: dict[str, list[str]]) -> dict[str, list[str]]:
    values = {p.name: by_name.get(p.name, ["1"]) for p in route.params}
    if route.route.startswith("accounts/users/") and "action" in values:
        values["action"] = list(USER_ACTIONS)
    if route.route.startswith("killswitch/breakers/") and "kind" in values:
        values["kind"] = list(BreakerRule.Kind.values)
    if route.route.startswith("reviews/") and "kind" in values:
        values["kind"], values["key"] = ["day"], by_name["key"][:1]
    if route.route.startswith("admin/auth/group/"):
        values["object_id"] = [str(Group.objects.get(name="viewer").pk)]
    return values


# Forms that the crawl sees empty but that the walk should also send filled in correctly, so that a
# single hostile field is judged behind otherwise valid input (the bot form's risk limits have no default).
def _valid_bodies(accounts: tuple[ExchangeAccount, ExchangeAccount]) -> dict[str, dict[str, str]]:
    grid = {
        "name": "Walk grid",
        "account": str(accounts[1].pk),
        "symbols": "BTC/USDT",
        "tick_interval_s": "5",
        "paper_balance": "10000",
        "max_order_notional": "500",
        "max_position_notional": "2000",
        "max_open_orders": "20",
        "max_orders_per_minute": "30",
        "daily_loss_limit": "200",
        "max_drawdown_pct": "10",
        "size_anomaly_factor": "10",
        "host": "local",
        "grid-lower": "20000",
        "grid-upper": "40000",
        "grid-levels": "10",
        "grid-order_amount": "0.001",
    }
    user = {"username": "walk-new-user", "email": "walk@example.com", "role": "viewer"}
    return {"bots/new/": grid, "bots/<int:bot_id>/edit/": grid, "accounts/users/": user}


def _crawl(
    clients: list[Client], routes: list[walk.Route], by_name: dict[str, list[str]]
) -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    """Fields of every form, by the route it posts to (POST) or reads (GET), from every page as an admin,
    a password-only session (the code forms) and an anonymous visitor (the login form) see it; the bot
    forms once per strategy. The values the pages filled in (ids, a review's digest) are this world's.
    """
    post: dict[str, dict[str, str]] = {}
    get: dict[str, set[str]] = {}
    for client in clients:
        for route in routes:
            path = route.build({name: options[0] for name, options in _valid_for(route, by_name).items()})
            queries = [{"strategy": key} for key in REGISTRY] if route.route.startswith("bots/") else [{}]
            for query in queries:
                try:
                    response = client.get(path, query)
                except Exception:  # noqa: S112 - the walk itself reports a failing page; the crawl only reads
                    continue
                if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
                    continue
                for form in walk.forms_on(path, response.content.decode(errors="replace")):
                    target = walk.route_of(form.action)
                    if target is None:
                        continue
                    if form.method == "post":
                        # The first page's values stay: they are the valid ones for that route.
                        post[target] = {**form.fields, **post.get(target, {})}
                    else:
                        get.setdefault(target, set()).update(form.fields)
    return post, get


def _queued() -> dict[bytes, list[bytes]]:
    """Every list in Redis (Celery's queues: control, bot.<id>) and what it holds."""
    r: Any = redis.Redis.from_url(django_settings.REDIS_URL)
    return {key: r.lrange(key, 0, -1) for key in r.scan_iter() if r.type(key) == b"list"}


def _unqueue(before: dict[bytes, list[bytes]]) -> None:
    """Take off the queues what the walk put there: some requests (a checkpoint, a balance check) queue a
    task at once rather than on commit, and no worker runs here to take it; other tests count the queue."""
    r: Any = redis.Redis.from_url(django_settings.REDIS_URL)
    for key, messages in _queued().items():
        left = Counter(before.get(key, []))
        for message in messages:
            if left[message]:
                left[message] -= 1
            else:
                r.lrem(key, 1, message)


@pytest.fixture
def world_for(
    settings: Any, new_key: Callable[..., Key], sandbox_key: tuple[str, str]
) -> Iterator[Callable[[str], tuple[World, list[walk.Route]]]]:
    queued_before = _queued()

    def make(role: str) -> tuple[World, list[walk.Route]]:
        # The walking admin stays fresh for the whole walk, and wrong codes sent to /accounts/step-up/
        # by the walk itself must not lock the walking user out (lockout is tested in tests/accounts).
        settings.STEP_UP_TTL = dt.timedelta(hours=1)
        if role != "anonymous":
            settings.AXES_FAILURE_LIMIT = 1_000_000
        key = new_key()
        used, _ = exchange_account_create(
            label="Walk account",
            exchange_id="sandbox",
            credentials=key.form(),
            attested_no_withdrawals=False,
            actor="system:test",
        )
        spare, _ = exchange_account_create(
            label="Walk spare",
            exchange_id="sandbox",
            credentials=new_key().form(),
            attested_no_withdrawals=False,
            actor="system:test",
        )
        limits: dict[str, Any] = {
            "account": used,
            "strategy": "grid",
            "symbols": ["BTC/USDT"],
            "params": {"lower": "20000", "upper": "40000", "levels": 10, "order_amount": "0.001"},
            "max_order_notional": Decimal(500),
            "max_position_notional": Decimal(2000),
            "daily_loss_limit": Decimal(200),
            "max_drawdown_pct": Decimal(10),
        }
        Bot.objects.create(name="Walk paper", **limits)
        Bot.objects.create(name="Walk live", mode=Bot.Mode.LIVE, **limits)
        # Rows that pages create on first sight (the halt singleton, the breakers' default rules): made
        # before the walk, so that a GET creating them is not mistaken for a GET that changes state.
        global_halt_state()
        rules_current()
        client, who = _login(role, settings)
        by_name = _valid_values(who, (spare, used))
        all_routes = walk.routes()
        password_only = Client(raise_request_exception=True)
        password_login(password_only, make_person("walk-password-only", "viewer"))
        admin = client if role == "admin" else _login("admin", settings)[0]
        post, get = _crawl([admin, password_only, Client(raise_request_exception=True)], all_routes, by_name)
        for route, body in _valid_bodies((spare, used)).items():
            post[route] = {**post.get(route, {}), **body}
        valid = {r.route: _valid_for(r, by_name) for r in all_routes}
        world = World(role, client, valid, post, get, _secrets(key, sandbox_key, client))
        return world, all_routes

    yield make
    _unqueue(queued_before)


# -- one request and its oracle -------------------------------------------------------------------------


def _body(response: Any) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return bytes(content).decode(errors="replace")


def _refused(response: Any, body: str) -> bool:
    if response.status_code >= 400:
        return True
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.get("Location", "")
        if location.startswith((*LOGIN_PAGES, "/accounts/step-up/", "/accounts/otp/")):
            return True
    # Messages added by this request only (older ones may still wait in the session).
    queued = getattr(getattr(response.wsgi_request, "_messages", None), "_queued_messages", [])
    if any(m.level >= 40 for m in queued):
        return True
    return response.status_code == 200 and 'role="alert"' in body


def _send(world: World, route: walk.Route, method: str, plan: Plan) -> Any:
    path = route.build(plan.path)
    url = f"{path}?{urlencode(plan.query)}" if plan.query else path
    label = f"{world.role} {method} {url[:200]!r} body={ {k: v[:40] for k, v in plan.body.items()} }"
    before = walk.fingerprint()
    world.requests += 1
    try:
        with transaction.atomic():  # a failing request must not poison the test's transaction
            response = world.client.get(url) if method == "GET" else world.client.post(url, plan.body)
    except DatabaseError as exc:
        raise AssertionError(f"{label}: 500 ({type(exc).__name__}: {str(exc)[:200]})") from None
    except Exception as exc:
        raise AssertionError(f"{label}: 500 ({type(exc).__name__}: {str(exc)[:200]})") from None
    body = _body(response)
    world.statuses[response.status_code] += 1
    assert response.status_code < 500, f"{label}: {response.status_code}"
    technical = [marker for marker in TECHNICAL if marker in body]
    assert not technical, f"{label}: technical text {technical} in the answer"
    headers = "\n".join(f"{k}: {v}" for k, v in response.items())
    leaked = [name for name, secret in world.secrets.items() if secret in body or secret in headers]
    assert not leaked, f"{label}: secret(s) in the answer: {leaked}"
    after = walk.fingerprint()
    added = walk.audit_actions_after(before.audit_seq)
    if method == "GET":
        allowed = EXPORT_ACTIONS if response.status_code == 200 else set()
    elif _refused(response, body):
        allowed = FAILURE_ACTIONS
    else:
        return response  # accepted: a change is what was asked for
    changed = before.changed_tables(after)
    unexpected = [a for a in added if a not in allowed]
    assert not changed and not unexpected, (
        f"{label}: answered {response.status_code} ({'a GET' if method == 'GET' else 'refused'}) but changed "
        f"{changed or ''} {('audit: ' + ', '.join(unexpected)) if unexpected else ''}"
    )
    return response


@dataclass(frozen=True)
class Reach:
    """Which methods of a route the role gets through to the view with (not the login page, not 403/405)."""

    get: bool
    post: bool


OPEN = Reach(get=True, post=True)


def _run(world: World, route: walk.Route, plan: Plan, reach: Reach = OPEN) -> None:
    if reach.get:
        _send(world, route, "GET", plan)
    if reach.post and not (world.role != "anonymous" and route.route in OWN_SESSION_ROUTES):  # see the docstring
        _send(world, route, "POST", plan)


def _login_page(response: Any) -> bool:
    return bool(response.status_code == 302 and response.get("Location", "").startswith(LOGIN_PAGES))


def _probe(world: World, route: walk.Route) -> Reach:
    """Send the route its valid request once (checked like any other) and see how far the role gets.

    Where the answer is the login page, 403 or 405, the refusal comes before the view reads any
    input: the fixed plans check that refusal once with hostile input, and no more is sent that way.
    """
    plan = Plan(
        {name: options[0] for name, options in world.valid[route.route].items()},
        {},
        dict(world.post_fields.get(route.route, {})),
    )
    get = _send(world, route, "GET", plan)
    if _login_page(get):
        return Reach(get=False, post=False)
    post_open = not (world.role != "anonymous" and route.route in OWN_SESSION_ROUTES)
    if post_open:
        post = _send(world, route, "POST", plan)
        post_open = not (_login_page(post) or post.status_code in (403, 405))
    return Reach(get=get.status_code not in (403, 405), post=post_open)


# -- plans ---------------------------------------------------------------------------------------------


def _names(world: World, route: walk.Route) -> tuple[list[str], list[str]]:
    read = walk.names_read_by(route.view) | set(EXTRA_NAMES)
    body = sorted(set(world.post_fields.get(route.route, {})) | read)
    query = sorted(world.get_fields.get(route.route, set()) | read)
    return query, body


# The fixed plans: (text, number) pairs. Every query parameter gets the number; every form field gets
# the number where the page filled in a number, the text elsewhere (so both reach their validators).
FIXED = (
    ("nul\x00byte", "NaN"),
    ("x" * 10_000, "9" * 30),
    ("\x1b[2J\x85 \u202egnp.exe", "1e13"),
    ("../../../../etc/passwd", "-0"),
    ("a" * 300 + "@example.com", "\u00b2"),
    ("' OR '1'='1' --", str(-(2**63) - 1)),
)


def _numeric(value: str) -> bool:
    try:
        Decimal(value)
    except ArithmeticError:
        return False
    return value.strip() != ""


def _fixed_plans(world: World, route: walk.Route, *, reachable: bool) -> Iterator[Plan]:
    """The first plan is sent whatever the reach; with `reachable` False, one hostile path follows it."""
    valid = {name: options[0] for name, options in world.valid[route.route].items()}
    query_names, body_names = _names(world, route)
    base = world.post_fields.get(route.route, {})
    for text, number in FIXED if reachable else FIXED[:1]:
        body = {n: number if _numeric(base.get(n, "")) else text for n in body_names}
        yield Plan(valid, dict.fromkeys(query_names, number), {**base, **body})
    # One field at a time, the others as the page filled them in: a value that only one field lets
    # through (a long but well-formed e-mail address, a 31-digit number) reaches the database.
    for name in base if reachable else ():
        yield Plan(valid, {}, {**base, name: "1" + "0" * 30 if _numeric(base[name]) else "a" * 300 + "@example.com"})
    hostile = [(p.name, value) for p in route.params for value in HOSTILE_PATH[p.converter]]
    for name, value in hostile if reachable else hostile[:1]:
        yield Plan({**valid, name: value}, {}, dict(base))


def _plan_strategy(world: World, route: walk.Route) -> st.SearchStrategy[Plan]:
    valid = world.valid[route.route]
    query_names, body_names = _names(world, route)
    base = world.post_fields.get(route.route, {})
    path = st.fixed_dictionaries(
        {
            p.name: st.one_of(
                st.sampled_from(valid[p.name]),
                st.sampled_from(valid[p.name]),
                st.sampled_from(HOSTILE_PATH[p.converter]),
            )
            for p in route.params
        }
    )
    query = st.dictionaries(st.sampled_from(query_names), hostile_value, max_size=3)
    hostile = st.dictionaries(st.sampled_from(body_names), hostile_value, min_size=1, max_size=3)
    return st.builds(lambda p, q, h: Plan(p, q, {**base, **h}), path, query, hostile)


def _walk_route(world: World, route: walk.Route) -> None:
    try:
        reach = _probe(world, route)
        reachable = reach.get or reach.post
        for i, plan in enumerate(_fixed_plans(world, route, reachable=reachable)):
            _run(world, route, plan, OPEN if i == 0 else reach)
    except AssertionError as exc:
        world.failures.append(str(exc))
        return
    if not reachable:
        return

    @hsettings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(_plan_strategy(world, route))
    def explore(plan: Plan) -> None:
        _run(world, route, plan, reach)

    try:
        explore()
    except AssertionError as exc:
        world.failures.append(str(exc).splitlines()[0])


@pytest.mark.parametrize("role", ROLES)
def test_no_route_fails_open_to_hostile_input(
    world_for: Callable[[str], tuple[World, list[walk.Route]]], role: str
) -> None:
    world, routes = world_for(role)
    assert len(routes) > 50, "the resolver walk found too few routes"
    for route in routes:
        _walk_route(world, route)
    print(f"{role}: {world.requests} requests on {len(routes)} routes, by status {sorted(world.statuses.items())}")
    assert world.requests >= 3 * len(routes)
    assert not world.failures, f"{len(world.failures)} of {len(routes)} routes failed:\n" + "\n".join(world.failures)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../manage.py",
        "/static/..%2f..%2fmanage.py",
        "/static/%2e%2e/%2e%2e/manage.py",
        "/static/css/..%2f..%2f..%2fbotconsole%2fsettings%2fbase.py",
        "/static/%00",
        "/static/" + "x" * 5000,
        "/static/css/%c0%ae%c0%ae/x",
    ],
)
def test_static_paths_with_traversal_are_not_found(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (400, 404), response.status_code
    body = _body(response)
    assert "SECRET_KEY" not in body and "DATABASES" not in body and "import" not in body
