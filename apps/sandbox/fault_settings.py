"""Reading a fault switch's settings from the admin route's JSON: types and ranges checked, unknown names refused."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class FaultError(ValueError):
    """A setting that cannot be used: the admin route answers 400 with this message."""


class Settings:
    """One switch's settings as sent: each read checks type and range, unknown names are refused."""

    def __init__(self, name: str, data: dict[str, Any], known: Iterable[str]) -> None:
        known = tuple(known)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise FaultError(f"{name} has no setting {unknown[0]!r}; its settings are: {', '.join(known)}")
        self.name = name
        self.data = data

    def _fail(self, key: str, what: str) -> FaultError:
        return FaultError(f"{self.name}: {key} must be {what}, not {self.data.get(key)!r}")

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        return self._integer(key, value, low, high)

    def required_integer(self, key: str, low: int, high: int) -> int:
        value = self.data.get(key)
        if value is None:
            raise FaultError(f"{self.name} needs {key}")
        return self._integer(key, value, low, high)

    def _integer(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(key, f"an integer from {low} to {high}")
        return value

    def number(self, key: str, low: float, high: float) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
            raise self._fail(key, f"a number above {low} and at most {high}")
        return float(value)

    def choice(self, key: str, options: Iterable[Any], default: Any) -> Any:
        options = tuple(options)
        value = self.data.get(key, default)
        if value not in options or isinstance(value, bool):
            raise self._fail(key, "one of " + ", ".join(repr(o) for o in options))
        return value

    def boolean(self, key: str) -> bool:
        value = self.data.get(key, False)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def text(self, key: str, valid: Callable[[str], bool], what: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not valid(value):
            raise self._fail(key, what)
        return value
