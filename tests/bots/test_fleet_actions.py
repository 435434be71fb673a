"""Fleet actions on the bots list: tick bots, start or stop them together, each bot's outcome reported."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots import services
from apps.bots.models import Bot, TradingHalt
from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


@pytest.fixture
def account(new_key: Callable[..., Key]) -> ExchangeAccount:
    acct, _ = exchange_account_create(
        label="Fleet account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


@pytest.fixture
def make_bot(account: ExchangeAccount) -> Callable[..., Bot]:
    def make(name: str, **fields: Any) -> Bot:
        return Bot.objects.create(
            name=name,
            account=account,
            strategy="grid",
            params={},
            symbols=["BTC/USDT"],
            max_order_notional=Decimal("100"),
            max_position_notional=Decimal("1000"),
            daily_loss_limit=Decimal("100"),
            max_drawdown_pct=Decimal("10"),
            **fields,
        )

    return make


def audit_actions(action: str) -> list[str]:
    return sorted(AuditEntry.objects.filter(action=action).values_list("target_id", flat=True))


def test_an_operator_starts_the_selected_bots_each_audited_and_a_halted_one_is_refused_with_its_reason(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    alpha, beta = make_bot("alpha"), make_bot("beta")
    make_bot("gamma")  # not ticked: left alone
    halted = make_bot("halted one", halted=True, halt_reason="drawdown 12% from peak")
    client, _ = logged_in("operator")
    response = client.post("/bots/fleet/", {"action": "start", "bot": [alpha.pk, beta.pk, halted.pk]}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha: start requested" in page and "beta: start requested" in page
    assert "halted one: refused: halted one is halted (drawdown 12% from peak)" in page
    states = dict(Bot.objects.values_list("name", "desired_state"))
    assert states == {"alpha": "running", "beta": "running", "gamma": "stopped", "halted one": "stopped"}
    # One audit entry per bot that started, none for the refused one or the one not ticked.
    assert audit_actions("bot.start_requested") == sorted([str(alpha.pk), str(beta.pk)])


def test_an_operator_stops_the_selected_bots_each_audited(logged_in: LoggedIn, make_bot: Callable[..., Bot]) -> None:
    alpha = make_bot("alpha", desired_state="running")
    make_bot("beta", desired_state="running")  # not ticked: left running
    gamma = make_bot("gamma", desired_state="running")
    client, _ = logged_in("operator")
    response = client.post("/bots/fleet/", {"action": "stop", "bot": [alpha.pk, gamma.pk]}, follow=True)
    page = response.content.decode()
    assert "alpha: stop requested" in page and "gamma: stop requested" in page and "beta:" not in page
    states = dict(Bot.objects.values_list("name", "desired_state"))
    assert states == {"alpha": "stopped", "beta": "running", "gamma": "stopped"}
    assert audit_actions("bot.stop_requested") == sorted([str(alpha.pk), str(gamma.pk)])


def test_a_global_halt_refuses_every_start_and_says_why(logged_in: LoggedIn, make_bot: Callable[..., Bot]) -> None:
    alpha, beta = make_bot("alpha"), make_bot("beta")
    TradingHalt.objects.update_or_create(pk=1, defaults={"active": True, "reason": "kill switch drill"})
    client, _ = logged_in("operator")
    page = client.post("/bots/fleet/", {"action": "start", "bot": [alpha.pk, beta.pk]}, follow=True).content.decode()
    assert page.count("refused: Trading is halted for every bot (kill switch drill)") == 2
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}
    assert not AuditEntry.objects.filter(action="bot.start_requested").exists()


def test_the_list_shows_checkboxes_to_an_operator_and_none_to_a_viewer(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot("alpha")
    operator, _ = logged_in("operator")
    page = operator.get("/bots/").content.decode()
    assert f'name="bot" value="{bot.pk}"' in page and "Start selected" in page and "Stop selected" in page
    viewer, _ = logged_in("viewer")
    page = viewer.get("/bots/").content.decode()
    assert "alpha" in page
    assert 'name="bot"' not in page and "Start selected" not in page and 'type="checkbox"' not in page


def test_a_viewer_gets_403_and_an_anonymous_user_is_sent_to_log_in(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot("alpha")
    viewer, _ = logged_in("viewer")
    assert viewer.post("/bots/fleet/", {"action": "start", "bot": [bot.pk]}).status_code == 403
    anonymous = Client().post("/bots/fleet/", {"action": "start", "bot": [bot.pk]})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert Bot.objects.get().desired_state == "stopped"
    assert not AuditEntry.objects.filter(action="bot.start_requested").exists()


def test_an_operator_may_not_get_the_fleet_form(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    assert client.get("/bots/fleet/").status_code == 405


@pytest.mark.parametrize(
    ("ids", "action", "message"),
    [
        ([], "start", "Select at least one bot to start or stop; nothing was changed."),
        (["abc"], "start", "A selected bot id is not a bot id; nothing was changed."),
        (["1.5"], "stop", "A selected bot id is not a bot id; nothing was changed."),
        (["²"], "start", "A selected bot id is not a bot id; nothing was changed."),
        (["99999999999999999999999"], "start", "A selected bot id is not a bot id; nothing was changed."),
        ([""], "start", "A selected bot id is not a bot id; nothing was changed."),
        (["999999"], "start", "No bot with id 999999; nothing was changed."),
        (["{bot}"], "launch", "Unknown fleet action &#x27;launch&#x27;: choose start or stop."),
        (["{bot}"], "", "Unknown fleet action &#x27;&#x27;: choose start or stop."),
    ],
)
def test_bad_input_gets_a_clear_400_and_changes_nothing(
    logged_in: LoggedIn, make_bot: Callable[..., Bot], ids: list[str], action: str, message: str
) -> None:
    bot = make_bot("alpha")
    client, _ = logged_in("operator")
    # The good id rides along with the bad one: the whole request is refused, not half of it.
    selected = [raw.format(bot=bot.pk) for raw in ids]
    if ids and "{bot}" not in ids:
        selected.append(str(bot.pk))
    response = client.post("/bots/fleet/", {"action": action, "bot": selected})
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and 'id="fleet-error"' in page
    assert "alpha" in page  # the list is shown again, to pick again
    assert Bot.objects.get().desired_state == "stopped"
    assert not AuditEntry.objects.filter(action__in=["bot.start_requested", "bot.stop_requested"]).exists()


def test_a_repeated_id_acts_once(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("alpha")
    outcomes = services.bots_fleet_act(bot_ids=[bot.pk, bot.pk], action="start", actor="system:test")
    assert [(o.name, o.ok, o.message) for o in outcomes] == [("alpha", True, "start requested")]
    assert AuditEntry.objects.filter(action="bot.start_requested").count() == 1


def test_the_service_refuses_an_unknown_id_before_touching_any_bot(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("alpha")
    with pytest.raises(ApplicationError, match="No bot with id 424242"):
        services.bots_fleet_act(bot_ids=[bot.pk, 424242], action="start", actor="system:test")
    assert Bot.objects.get().desired_state == "stopped"


def test_an_unexpected_failure_of_one_bot_is_reported_as_unknown_and_the_others_go_on(
    logged_in: LoggedIn, make_bot: Callable[..., Bot], monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha, beta = make_bot("alpha"), make_bot("beta")
    real_start = services.bot_start

    def start(*, bot: Bot, **kwargs: Any) -> None:
        # A stand-in (the only one here) for a failure that cannot be provoked on demand, such as the
        # database connection dropping in the middle of one bot's start.
        if bot.pk == alpha.pk:
            raise RuntimeError("connection lost")
        real_start(bot=bot, **kwargs)

    monkeypatch.setattr(services, "bot_start", start)
    client, _ = logged_in("operator")
    response = client.post("/bots/fleet/", {"action": "start", "bot": [alpha.pk, beta.pk]}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha: unknown: it failed unexpectedly; check its page." in page and "beta: start requested" in page
    assert Bot.objects.get(pk=beta.pk).desired_state == "running"
