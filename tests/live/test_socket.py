"""The live websocket: who may open one, what each socket receives, and when it is dropped.

Each test drives the real ASGI application (botconsole.asgi) with WebsocketCommunicator from one
event loop (async_to_sync); database work inside it goes through sync_to_async, so it runs on the
test's own thread and connection. transaction=True: publish() announces only after a real commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client

from apps.accounts.models import SealedTOTPDevice, User, UserSession
from apps.accounts.services import user_reset_otp, user_set_active
from apps.accounts.sessions import session_end
from apps.bots.models import Bot
from apps.events.models import Event
from apps.events.services import event_json, publish
from botconsole.asgi import application
from tests.live.conftest import one_event, run, socket
from tests.people import Person, password_login

pytestmark = pytest.mark.django_db(transaction=True)

Login = Callable[[str], tuple[Client, Person]]
ORDER = {"id": 1, "symbol": "BTC/USDT", "side": "buy", "price": "60000", "amount": "0.001", "status": "open"}
apublish = sync_to_async(publish)


# -- who may connect ------------------------------------------------------------------------


def test_it_refuses_an_anonymous_socket() -> None:
    async def scenario() -> None:
        connected, code = await socket(None).connect(timeout=3)
        assert (connected, code) == (False, 4003)

    run(scenario)


def test_it_refuses_a_password_only_session(person: Callable[..., Person]) -> None:
    who = person("half-logged-in", "admin")
    client = Client()
    password_login(client, who)
    assert client.get("/").status_code == 302  # HTTP agrees: not verified yet

    async def scenario() -> None:
        connected, code = await socket(client).connect(timeout=3)
        assert (connected, code) == (False, 4003)

    run(scenario)


def test_it_refuses_a_foreign_origin(logged_in: Login) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        connected, _code = await socket(client, origin="https://evil.example").connect(timeout=3)
        assert not connected

    run(scenario)


def socket_at(client: Client, host: str, origin: str | None, scheme: str = "ws") -> WebsocketCommunicator:
    """A socket of `client`'s session to the console at `host`, sent with this Origin (None: no Origin at all)."""
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}"
    headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    communicator.scope["scheme"] = scheme
    return communicator


@pytest.mark.parametrize(
    ("host", "origin", "scheme"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:1", "ws"),  # another program on the same machine
        ("127.0.0.1:8000", "http://127.0.0.1:8001", "ws"),
        ("127.0.0.1:8000", "http://127.0.0.1", "ws"),  # port 80 is not 8000
        ("127.0.0.1:8000", "https://127.0.0.1:8000", "ws"),  # another scheme is another origin
        ("localhost", "https://localhost", "ws"),
        ("localhost", "http://localhost", "wss"),
        ("127.0.0.1:8000", "http://localhost:8000", "ws"),  # another host, though both are allowed hosts
        ("127.0.0.1:8000", None, "ws"),
        ("127.0.0.1:8000", "null", "ws"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000/path", "ws"),
        ("127.0.0.1:8000", "http://user@127.0.0.1:8000", "ws"),
        ("127.0.0.1:8000", "http://127.0.0.1:99999", "ws"),
        ("127.0.0.1:8000", "ws://127.0.0.1:8000", "ws"),
        ("evil.example:8000", "http://evil.example:8000", "ws"),  # the page's own origin, but not an allowed host
    ],
)
def test_it_refuses_an_origin_that_is_not_the_consoles_own(
    logged_in: Login, host: str, origin: str | None, scheme: str
) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket_at(client, host, origin, scheme)
        connected, _code = await ws.connect(timeout=3)
        if connected:  # leave nothing open behind a failure
            await ws.disconnect()
        assert not connected

    run(scenario)


@pytest.mark.parametrize(
    ("host", "origin", "scheme"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000", "ws"),  # make run
        ("localhost:8000", "http://LOCALHOST:8000", "ws"),
        ("localhost", "http://localhost:80", "ws"),
        ("localhost", "https://localhost", "wss"),  # behind the TLS proxy
        ("localhost:443", "https://localhost", "wss"),
    ],
)
def test_it_accepts_the_consoles_own_origin(logged_in: Login, host: str, origin: str, scheme: str) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket_at(client, host, origin, scheme)
        connected, _code = await ws.connect(timeout=3)
        assert connected
        await ws.disconnect()

    run(scenario)


def test_it_accepts_a_trusted_origin_and_only_that(logged_in: Login, settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com", "https://*.ops.example.com:8443"]
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        for origin, expected in [
            ("https://console.example.com", True),
            ("https://console.example.com:443", True),
            ("http://console.example.com", False),
            ("https://console.example.com:8443", False),
            ("https://a.ops.example.com:8443", True),
            ("https://ops.example.com:8443", True),
            ("https://a.ops.example.com", False),
            ("https://evilops.example.com:8443", False),
        ]:
            ws = socket_at(client, "localhost", origin, "wss")
            connected, _code = await ws.connect(timeout=3)
            if connected:
                await ws.disconnect()
            assert connected is expected, origin

    run(scenario)


def test_it_refuses_a_session_whose_device_is_gone(logged_in: Login) -> None:
    client, who = logged_in("viewer")
    devices = SealedTOTPDevice.objects.filter(user=who.user)

    async def scenario() -> None:
        # Straight to the table: user_reset_otp would also end the session, hiding the device check.
        await sync_to_async(devices.update)(confirmed=False)
        assert await socket(client).connect(timeout=3) == (False, 4003)
        await sync_to_async(devices.delete)()
        assert await socket(client).connect(timeout=3) == (False, 4003)

    run(scenario)


def test_it_closes_with_4004_for_an_unknown_bot(logged_in: Login) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        for query in ("bot=999999999", "bot=abc"):
            connected, code = await socket(client, f"/ws/live/?{query}").connect(timeout=3)
            assert (connected, code) == (False, 4004), query

    run(scenario)


# -- what each socket receives ------------------------------------------------------------


def test_a_verified_viewer_receives_an_order_for_a_bot_on_the_fleet_and_that_bot_only(
    logged_in: Login, make_bot: Callable[[str], Bot]
) -> None:
    client, _ = logged_in("viewer")
    bot, other = make_bot("followed"), make_bot("other")

    async def scenario() -> None:
        fleet, mine, theirs = (
            socket(client),
            socket(client, f"/ws/live/?bot={bot.pk}"),
            socket(client, f"/ws/live/?bot={other.pk}"),
        )
        for ws in (fleet, mine, theirs):
            assert (await ws.connect(timeout=3))[0]
        event = await apublish(kind="order_new", bot_id=bot.pk, data=ORDER)
        expected = event_json(await sync_to_async(Event.objects.get)(seq=event.seq))
        assert expected["data"] == ORDER and expected["bot"] == bot.pk and expected["at"].endswith("Z")
        assert await one_event(fleet) == expected
        assert await one_event(mine) == expected
        assert await theirs.receive_nothing(timeout=0.5)
        for ws in (fleet, mine, theirs):
            await ws.disconnect()

    run(scenario)


def test_an_admin_alert_reaches_an_admin_but_not_a_viewer(logged_in: Login) -> None:
    admin_client, _ = logged_in("admin")
    viewer_client, _ = logged_in("viewer")

    async def scenario() -> None:
        admin, viewer = socket(admin_client), socket(viewer_client)
        assert (await admin.connect(timeout=3))[0] and (await viewer.connect(timeout=3))[0]
        secret_alert = {"kind": "key_check_failed", "message": "key can withdraw", "audience": "admin"}
        await apublish(kind="alert", data=secret_alert)
        got = await one_event(admin)
        assert got["kind"] == "alert" and got["data"] == secret_alert and got["bot"] is None
        assert await viewer.receive_nothing(timeout=1)
        # An alert for everyone reaches both: the viewer's socket works, it was only filtered.
        await apublish(kind="alert", data={"kind": "daily_loss", "message": "bot halted", "audience": "all"})
        assert (await one_event(viewer))["data"]["kind"] == "daily_loss"
        assert (await one_event(admin))["data"]["kind"] == "daily_loss"
        await admin.disconnect()
        await viewer.disconnect()

    run(scenario)


def test_publish_inside_a_rolled_back_transaction_sends_nothing(logged_in: Login) -> None:
    client, _ = logged_in("viewer")

    def publish_then_roll_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            publish(kind="kill_switch", data={"state": "halted"})
            raise RuntimeError("the caller fails after publishing")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=3))[0]
        await sync_to_async(publish_then_roll_back)()
        assert await ws.receive_nothing(timeout=1)
        assert not await sync_to_async(Event.objects.exists)()
        await ws.disconnect()

    run(scenario)


# -- dropped when the session ends ----------------------------------------------------------


def _end_session(client: Client, who: Person) -> None:
    tracked = UserSession.objects.get(session_key=client.cookies["sessionid"].value)
    session_end(user_session=tracked, reason=UserSession.EndReason.TERMINATED, actor="system:test")


def _deactivate(client: Client, who: Person) -> None:
    user_set_active(user=who.user, active=False, actor="system:test")


def _reset_otp(client: Client, who: Person) -> None:
    user_reset_otp(user=who.user, actor="system:test")


def _remove_role(client: Client, who: Person) -> None:
    who.user.groups.clear()  # no role, no view_console


@pytest.mark.parametrize("end", [_end_session, _deactivate, _reset_otp, _remove_role])
def test_a_socket_is_dropped_within_the_recheck_interval_when_its_session_ends(
    end: Callable[[Client, Person], None], logged_in: Login, settings: Any
) -> None:
    settings.LIVE_RECHECK_S = 1
    client, who = logged_in("operator")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=3))[0]
        await sync_to_async(end)(client, who)
        closed = await ws.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": 4001}
        # Nothing more reaches it, even though the group message still arrives.
        await apublish(kind="kill_switch", data={"state": "halted"})
        assert await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()

    run(scenario)
    assert User.objects.filter(pk=who.user.pk).exists()


def test_a_live_session_stays_connected_across_rechecks(logged_in: Login, settings: Any) -> None:
    settings.LIVE_RECHECK_S = 1
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=3))[0]
        assert await ws.receive_nothing(timeout=2.5)  # two re-checks passed, no close
        await apublish(kind="heartbeat", bot_id=None, data={})
        assert (await one_event(ws))["kind"] == "heartbeat"
        await ws.disconnect()

    run(scenario)


def test_an_idle_socket_outlives_the_redis_client_read_timeout(
    logged_in: Login, make_bot: Callable[[str], Bot]
) -> None:
    """redis-py 8 reads with a 5 s socket timeout by default; the layer's blocking receive must survive it."""
    client, _ = logged_in("viewer")
    bot = make_bot("quiet")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=3))[0]
        assert await ws.receive_nothing(timeout=7)  # idle longer than 5 s
        event = await apublish(kind="order_new", bot_id=bot.pk, data=ORDER)
        assert (await one_event(ws))["seq"] == event.seq
        await ws.disconnect()

    run(scenario)
