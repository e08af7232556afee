"""The typed stand-in for personal data whose key has been destroyed.

Reads after erasure must never crash and never show old values, so every place that can
hold personal data may hold `ERASED` instead, and callers test for it with `is_erased`.
"""

from __future__ import annotations

from typing import Any, Final


class ErasedValue:
    """Singleton marker: the value existed but was crypto-shredded."""

    _instance: ErasedValue | None = None

    def __new__(cls) -> ErasedValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<erased>"

    def __bool__(self) -> bool:
        return False

    def __deepcopy__(self, memo: dict[int, Any]) -> ErasedValue:
        return self

    def __reduce__(self) -> str:
        return "ERASED"


ERASED: Final = ErasedValue()


def is_erased(value: object) -> bool:
    return value is ERASED
