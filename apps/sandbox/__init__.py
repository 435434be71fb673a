"""A local fake of the Binance spot API, for development and tests ONLY.

It speaks enough of Binance's REST API, market streams and WebSocket API that unmodified
`ccxt.binance`, `ccxt.async_support.binance` and `ccxt.pro.binance` work against it once
`apps.sandbox.ccxt_config.point_at_sandbox` has rewritten their URLs. Prices come from a
seeded random walk; orders fill against synthetic liquidity; keys, balances and orders live
in memory and vanish when the process stops.

It has no real security: anyone who can reach it can mint keys and money through
`/_sandbox/`. It listens on loopback only unless told otherwise, and must never be exposed or
pointed at by anything that handles real funds.

Run it with the settings module of this package, which needs no database and no Vault:

    DJANGO_SETTINGS_MODULE=apps.sandbox.settings ./.venv/bin/python manage.py runsandbox --port 8765

(The project's settings work too; the command never opens the database.) Test control is under
`/_sandbox/` (apps.sandbox.admin_routes, client apps.sandbox.admin), fault switches included
(slow, failing, throttled or dropped answers, a skewed clock: apps.sandbox.faults); ccxt clients are
pointed at it with apps.sandbox.ccxt_config.point_at_sandbox.
"""
