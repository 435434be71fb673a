"""The strategy registry: every strategy a bot can run, by key."""

from apps.bots.strategies.base import Strategy
from apps.bots.strategies.dca import DcaStrategy
from apps.bots.strategies.grid import GridStrategy
from apps.bots.strategies.ma_cross import MaCrossStrategy

REGISTRY: dict[str, type[Strategy]] = {cls.key: cls for cls in (GridStrategy, DcaStrategy, MaCrossStrategy)}


def get_strategy(key: str) -> type[Strategy]:
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown strategy {key!r}") from None
