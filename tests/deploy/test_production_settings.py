"""Production settings that the deployment files rely on."""

from __future__ import annotations

import json

from tests.core.test_settings import PRODUCTION_ENV, _manage


def test_production_trusts_the_client_address_only_as_uvicorn_derived_it() -> None:
    names = ["AXES_CLIENT_IP_CALLABLE", "SECURE_PROXY_SSL_HEADER", "STATIC_ROOT", "DEBUG"]
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps([getattr(settings, n) for n in {names}], default=str))"
    )
    result = _manage({**PRODUCTION_ENV, "BOTCONSOLE_VAR_DIR": "/var/lib/botconsole"}, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    values = dict(zip(names, json.loads(result.stdout.strip().splitlines()[-1]), strict=True))
    # Only REMOTE_ADDR (apps.core.net): a forwarded header is believed by uvicorn alone, and only from the proxy.
    assert values["AXES_CLIENT_IP_CALLABLE"] == "apps.core.net.client_ip"
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # Where the migrate unit's collectstatic writes and nginx's /static/ reads.
    assert values["STATIC_ROOT"] == "/var/lib/botconsole/static"
    assert values["DEBUG"] is False


def test_production_knows_no_sandbox_exchange() -> None:
    code = (
        "import json; from django.conf import settings; from apps.exchanges import port; "
        "from apps.exchanges.forms import ExchangeAccountForm; "
        "print(json.dumps(['apps.sandbox' in settings.INSTALLED_APPS, 'sandbox' in port.supported_exchanges(), "
        "'sandbox' in dict(ExchangeAccountForm().fields['exchange_id'].choices)]))"
    )
    result = _manage(PRODUCTION_ENV, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, False, False]
    # Nor its command: the local exchange cannot be started from a production install.
    assert _manage(PRODUCTION_ENV, "runsandbox", "--help").returncode != 0
