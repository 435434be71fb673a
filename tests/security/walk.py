"""What the hostile-request suite walks: every URL pattern of the project, the forms that post to
each, the parameters each view reads, and a fingerprint of the database to tell "nothing changed".

Everything here is found, not listed: the URL patterns come from Django's resolver, the form fields
from the pages as a user sees them, the parameter names from the source of the modules that hold
the views. A new page, form or parameter is walked without a change to the suite.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote, urljoin, urlsplit

from django.db import connection
from django.db.models import Model
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

# <int:bot_id>, <slug:action>, <name> (a str) in a route; (?P<name>...) in a regex pattern.
_ROUTE_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>(?:[^()]|\([^()]*\))*)\)")
# Names a view reads from the request (request.GET.get("x"), request.POST["x"], ...).
_READS = re.compile(r"""request\.(?:GET|POST|data)(?:\.get\(|\.getlist\(|\.pop\(|\[)\s*["']([\w.-]+)["']""")
_FIELD_READS = re.compile(r"""\b(?:GET|POST)(?:\.get\(|\[)\s*["']([\w.-]+)["']""")


@dataclass(frozen=True)
class Param:
    name: str
    converter: str  # int, str, slug, uuid, path, or "regex" for a named regex group


@dataclass(frozen=True)
class Route:
    """One URL pattern, as the resolver's ResolverMatch.route writes it (the key of everything else)."""

    route: str
    params: tuple[Param, ...]
    view: object

    def build(self, values: dict[str, str]) -> str:
        """The path with each parameter replaced by `values[name]`, percent-encoded as a browser would."""
        path = self.route

        def route_param(match: re.Match[str]) -> str:
            conv = match.group("conv") or "str"
            return quote(values[match.group("name")], safe="/" if conv == "path" else "")

        path = _ROUTE_PARAM.sub(route_param, path)
        path = _REGEX_GROUP.sub(lambda m: quote(values[m.group("name")], safe="/"), path)
        return "/" + path.replace("^", "").replace("$", "")


def routes() -> list[Route]:
    """Every URL pattern of the project, walked recursively from the root resolver."""

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> Iterator[Route]:
        for pattern in patterns:
            text = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, text)
                continue
            params = [Param(m.group("name"), m.group("conv") or "str") for m in _ROUTE_PARAM.finditer(text)]
            params += [Param(m.group("name"), "regex") for m in _REGEX_GROUP.finditer(text)]
            yield Route(text, tuple(params), pattern.callback)

    return list(walk(get_resolver().url_patterns, ""))


def route_of(path: str) -> str | None:
    try:
        return resolve(urlsplit(path).path).route
    except Resolver404:
        return None


# -- forms on the pages ------------------------------------------------------------------------


@dataclass
class Form:
    action: str  # absolute path (with its query, if the action has one)
    method: str
    fields: dict[str, str] = field(default_factory=dict)  # name -> the value the page filled in
    choices: dict[str, list[str]] = field(default_factory=dict)  # name -> the values a <select> offers


class _FormParser(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(urljoin(self.page, a.get("action", "")), a.get("method", "get").lower())
            self.forms.append(self._form)
            return
        if self._form is None or not a.get("name") or a["name"] == "csrfmiddlewaretoken":
            if tag == "option" and self._form is not None and self._select is not None:
                self._option(a)
            return
        name = a["name"]
        if tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                self._form.fields.setdefault(name, "")
                self._form.choices.setdefault(name, []).append(a.get("value", "on"))
            else:
                self._form.fields[name] = a.get("value", "")
        elif tag == "select":
            self._select = name
            self._form.fields.setdefault(name, "")
        elif tag == "textarea":
            self._textarea = name
            self._form.fields[name] = ""
        elif tag == "button":
            self._form.fields[name] = a.get("value", "")

    def _option(self, a: dict[str, str]) -> None:
        assert self._form is not None and self._select is not None
        self._form.choices.setdefault(self._select, []).append(a.get("value", ""))
        if "selected" in a or not self._form.fields.get(self._select):
            self._form.fields[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea is not None:
            self._form.fields[self._textarea] += data


def forms_on(page_path: str, html: str) -> list[Form]:
    parser = _FormParser(page_path)
    parser.feed(html)
    return parser.forms


# -- parameters a view reads ---------------------------------------------------------------------


@functools.cache
def names_read_by(view: object) -> frozenset[str]:
    """Parameter names read from request.GET / request.POST in the modules of the view and its decorators."""
    names: set[str] = set()
    seen: set[str] = set()
    func = view
    while func is not None:
        module = sys.modules.get(getattr(func, "__module__", "") or "")
        if module is not None and module.__name__ not in seen:
            seen.add(module.__name__)
            try:
                source = inspect.getsource(module)
            except (OSError, TypeError):
                source = ""
            names |= set(_READS.findall(source)) | set(_FIELD_READS.findall(source))
        func = getattr(func, "__wrapped__", None) or getattr(func, "__func__", None)
        if func is view:
            break
    return frozenset(names)


# -- what "nothing changed" means -----------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    tables: dict[str, str]  # table -> digest of its rows
    audit_seq: int

    def changed_tables(self, other: Fingerprint) -> list[str]:
        return sorted(t for t in self.tables if self.tables[t] != other.tables.get(t))


def _select(model: type[Model], exclude: tuple[str, ...] = ()) -> str:
    """SQL for a digest of the model's rows (table and column names come from the models, not from input)."""
    q = connection.ops.quote_name
    columns = ", ".join(q(f.column) for f in model._meta.concrete_fields if f.column not in exclude)
    return (
        f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
        f"FROM (SELECT {columns} FROM {q(model._meta.db_table)}) t"
    )


@functools.cache
def _fingerprint_sql() -> tuple[list[str], str]:
    from django.contrib.auth.models import Group

    from apps.accounts.models import User
    from apps.alerts.models import AlertWebhook
    from apps.audit.models import AuditEntry
    from apps.bots.models import Bot, FleetHost, TradingHalt
    from apps.exchanges.models import ExchangeAccount
    from apps.killswitch.models import BreakerRule, KillRun
    from apps.reviews.models import ReviewSignoff

    models: dict[str, tuple[type[Model], tuple[str, ...]]] = {
        "bots": (Bot, ()),
        "fleet hosts": (FleetHost, ()),
        "exchange accounts": (ExchangeAccount, ()),
        "users": (User, ("last_login",)),
        "groups": (Group, ()),
        "user groups": (User.groups.through, ()),
        "user permissions": (User.user_permissions.through, ()),
        "group permissions": (Group.permissions.through, ()),
        "trading halt": (TradingHalt, ()),
        "breaker rules": (BreakerRule, ()),
        "kill runs": (KillRun, ()),
        "alert webhook": (AlertWebhook, ()),
        "review sign-offs": (ReviewSignoff, ()),
    }
    parts = [f"({_select(model, exclude)})" for model, exclude in models.values()]
    audit = connection.ops.quote_name(AuditEntry._meta.db_table)
    parts.append(f"(SELECT coalesce(max(seq), 0)::text FROM {audit})")
    return list(models), "SELECT " + ", ".join(parts)


def fingerprint() -> Fingerprint:
    """The rows that matter: bots, accounts, users and roles, the halt, breakers, kills, sign-offs, webhook.

    One query. Sessions are left out (every request touches them, and logins change them by design),
    as are last_login and the authenticator devices' throttling counters (a wrong code moves them),
    and django-axes' counters (a refused login counts). Audit entries are compared by what was added.
    """
    names, sql = _fingerprint_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return Fingerprint(dict(zip(names, row[:-1], strict=True)), int(row[-1]))


def audit_actions_after(seq: int) -> list[str]:
    from apps.audit.models import AuditEntry

    return list(AuditEntry.objects.filter(seq__gt=seq).order_by("seq").values_list("action", flat=True))
