"""Argument checks shared by every layer: each error names the argument and what would be accepted."""

from __future__ import annotations

import difflib
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


def did_you_mean(names: Iterable[str], choices: Iterable[str]) -> str:
    """`` (did you mean 'seed'?)`` for the names with a close match among ``choices`` (difflib's, cutoff 0.6), else
    ``""``; several names read `` (did you mean 'seed' for 'sede', 'clip' for 'clp'?)``."""
    names, choices = list(names), list(choices)
    hints = [(name, difflib.get_close_matches(name, choices, n=1)) for name in names]
    found = [(name, match[0]) for name, match in hints if match]
    if not found:
        return ""
    if len(names) == 1:
        return f" (did you mean {found[0][1]!r}?)"
    return " (did you mean " + ", ".join(f"{match!r} for {name!r}" for name, match in found) + "?)"


def unknown_options_message(owner: str, unknown: Iterable[str], known: Iterable[str]) -> str:
    """``"Unknown ZO option(s) ['sede'] (did you mean 'seed'?); the options are [...]."``: one message for a mapping's
    keys and the command line's, so that a typo reads the same from Python and from a config."""
    unknown, known = sorted(unknown), sorted(known)
    return f"Unknown {owner} option(s) {unknown}{did_you_mean(unknown, known)}; the options are {known}."


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
