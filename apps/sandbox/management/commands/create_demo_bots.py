from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.services import record
from apps.bots.models import Bot
from apps.bots.services import bot_create
from apps.exchanges.models import ExchangeAccount

DEMO_ACCOUNT = "Sandbox demo"


class Command(BaseCommand):
    help = "First run: two stopped demo bots on the sandbox demo account (a live grid and a paper DCA)."

    def handle(self, *args: Any, **options: Any) -> None:
        account = ExchangeAccount.objects.filter(label=DEMO_ACCOUNT, exchange_id="sandbox").first()
        if account is None:
            self.stdout.write(f"no {DEMO_ACCOUNT!r} account; no demo bots")
            return
        limits = {
            "max_order_notional": Decimal("500"),
            "max_position_notional": Decimal("5000"),
            "max_open_orders": 20,
            "max_orders_per_minute": 30,
            "daily_loss_limit": Decimal("500"),
            "max_drawdown_pct": Decimal("20"),
        }
        demos = [
            Bot(
                name="Demo grid (sandbox)",
                account=account,
                strategy="grid",
                symbols=["BTC/USDT"],
                tick_interval_s=3,
                params={"lower": "59000", "upper": "61000", "levels": 9, "order_amount": "0.001"},
                **limits,
            ),
            Bot(
                name="Demo DCA (paper)",
                account=account,
                strategy="dca",
                symbols=["ETH/USDT"],
                tick_interval_s=5,
                params={"quote_per_buy": "25", "every_ticks": 3, "take_profit_pct": "1"},
                **limits,
            ),
        ]
        for bot in demos:
            if Bot.objects.filter(name=bot.name).exists():
                continue
            bot_create(bot=bot, actor="system:first-run")
            if bot.strategy == "grid":
                # The sandbox holds no real money, so the demo grid trades "live" there from the start:
                # its orders go through the whole path (its own Vault identity, the gate, the sandbox).
                Bot.objects.filter(pk=bot.pk).update(mode=Bot.Mode.LIVE)
                record(
                    actor="system:first-run",
                    action="bot.mode_changed",
                    target=bot,
                    data={"before": {"mode": "paper"}, "after": {"mode": "live"}, "why": "sandbox demo"},
                )
            self.stdout.write(f"created {bot.name}")
