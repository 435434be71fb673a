"""The strategy registry: every strategy a bot can run, by key."""

from apps.strategies.base import Strategy
from apps.strategies.dca import DcaStrategy
from apps.strategies.grid import GridStrategy
from apps.strategies.ma_cross import MaCrossStrategy

REGISTRY: dict[str, type[Strategy]] = {cls.key: cls for cls in (GridStrategy, DcaStrategy, MaCrossStrategy)}


def get_strategy(key: str) -> type[Strategy]:
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown strategy {key!r}") from None
