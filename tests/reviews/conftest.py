# The trading fixtures (a live sandbox account, bots on it, BTC pinned at 60000) serve the reviews too.
from tests.trading.conftest import live, make_bot, price  # noqa: F401
