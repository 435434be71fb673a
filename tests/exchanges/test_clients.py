from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.exchanges import clients
from launcher.embedded import free_port
from tests.keys import Key


def test_rate_limiting_is_retried_then_reported_as_unavailable(
    sandbox: Any, new_key: Callable[..., Key], settings: Any
) -> None:
    key = new_key()
    sandbox.admin.set_rate_limit(2, api_key=key.api_key)
    client = clients.build_client(exchange_id="sandbox", credentials=key.form())
    succeeded = 0
    try:
        with pytest.raises(clients.ExchangeUnavailable, match="unavailable"):
            for _ in range(5):
                clients.call(client.fetch_balance, retries=1)
                succeeded += 1
    finally:
        sandbox.admin.set_rate_limit(100000, api_key=key.api_key)
    assert 1 <= succeeded < 5  # served until the limit, then 429 (retried once) became ExchangeUnavailable


def test_a_refused_connection_becomes_exchange_unavailable(settings: Any) -> None:
    settings.SANDBOX_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = clients.build_client(exchange_id="sandbox", credentials={"apiKey": "a" * 64, "secret": "b" * 64})
    with pytest.raises(clients.ExchangeUnavailable) as caught:
        clients.call(client.fetch_time, retries=2)
    assert "http" not in caught.value.message  # no URL (they can carry signed queries)


def test_a_wrong_secret_is_key_rejected_without_retry(sandbox: Any, new_key: Callable[..., Key]) -> None:
    key = new_key()
    client = clients.build_client(exchange_id="sandbox", credentials={"apiKey": key.api_key, "secret": "x" * 64})
    before = sandbox.admin.order_count().total
    with pytest.raises(clients.KeyRejected, match="Signature for this request is not valid"):
        clients.call(client.fetch_balance)
    assert sandbox.admin.order_count().total == before


def test_required_credentials_follow_the_exchange() -> None:
    assert clients.required_credentials("sandbox") == ["apiKey", "secret"]
    assert clients.required_credentials("kucoin") == ["apiKey", "secret", "password"]
    with pytest.raises(clients.ExchangeError, match="Unknown exchange"):
        clients.required_credentials("nope")
