# The trading fixtures (a live sandbox account and bots on it) serve the breaker tests too.
from tests.trading.conftest import live, make_bot, price  # noqa: F401
