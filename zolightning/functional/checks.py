"""Argument checks shared by every layer: each error names the argument and what would be accepted."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, get_args


def choices_of(literal: Any) -> tuple[str, ...]:
    """The values of a ``Literal[...]`` type, so that no tuple restates it."""
    return tuple(get_args(literal))


def check_choice(value: Any, literal: Any, argument: str) -> None:
    """Raise a ``ValueError`` naming ``argument`` unless ``value`` is one of the ``Literal`` type's values."""
    allowed = choices_of(literal)
    if value not in allowed:
        raise ValueError(f"`{argument}` must be one of {allowed}, got {value!r}.")


def compile_pattern(pattern: str, argument: str) -> re.Pattern[str]:
    """``re.compile(pattern)``, or a ``ValueError`` naming ``argument`` and the regex error."""
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as error:
        # Quoted as written: repr() would double every backslash of a regex.
        raise ValueError(f'Invalid regex "{pattern}" in `{argument}`: {error}.') from None


def compile_patterns(patterns: Iterable[str], argument: str) -> list[re.Pattern[str]]:
    """Each of ``patterns`` compiled by :func:`compile_pattern`."""
    return [compile_pattern(pattern, argument) for pattern in patterns]


def check_scales(scales: dict[str, float], argument: str) -> dict[str, float]:
    """``{regex: multiplier}`` with valid regexes and multipliers ≥ 0, as floats."""
    checked = {}
    for pattern, scale in scales.items():
        compile_pattern(pattern, argument)
        if not float(scale) >= 0:
            raise ValueError(f"`{argument}[{pattern!r}]` must be >= 0, got {scale}.")
        checked[pattern] = float(scale)
    return checked


def check_int_at_least(value: Any, minimum: int, argument: str) -> None:
    """Raise a ``ValueError`` naming ``argument`` unless ``value`` is an integer ≥ ``minimum``."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"`{argument}` must be an integer >= {minimum}, got {value!r}.")


def check_non_negative(value: float, argument: str) -> None:
    if not value >= 0.0:
        raise ValueError(f"`{argument}` must be >= 0, got {value}.")


def check_positive(value: float, argument: str, fix: str = "") -> None:
    if not value > 0.0:
        raise ValueError(f"`{argument}` must be > 0, got {value}.{(' ' + fix) if fix else ''}")
