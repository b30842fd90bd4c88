"""Short command-line errors: the innermost problem of jsonargparse's nested report, in one line.

A typo in a nested key (``--model.init_args.zo.sede 1``) or a value that a data module's ``__init__`` refuses reaches
jsonargparse through the ``Union`` of subclass mode, whose report nests every subtype's error (19 lines for one typo).
The user needs its innermost line, with the class it belongs to: for an unknown key, the same message as from Python
(:func:`~zolightning.functional.checks.unknown_options_message`, with a close match); otherwise the class's own.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

from zolightning.functional.checks import unknown_options_message

__all__ = ["UNION_REPORT", "accepted_options", "innermost_parse_error", "innermost_instantiation_error"]

UNION_REPORT = "Does not validate against any of the Union subtypes"

_CLASS = re.compile(r"Problem with given class_path '([^']+)':")
_KEY = re.compile(r'Parser key "([^"]+)":')
_UNKNOWN = re.compile(r"Option '([^']+)' is not accepted")
# The report's own scaffolding around each error: never the innermost problem itself.
_SCAFFOLD = (UNION_REPORT, "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class _Frame:
    indent: int
    class_path: str | None = None
    key: str | None = None


def _owner_name(class_path: str) -> str:
    """How a message names a class: ``"ZO"`` for the ``zo:`` key's :class:`~zolightning.ZOConfig` (as
    ``ZOConfig.coerce`` does), else the class's own name."""
    name = class_path.rsplit(".", 1)[-1]
    return "ZO" if name == "ZOConfig" else name


def accepted_options(class_path: str) -> list[str] | None:
    """The keyword arguments the class at ``class_path`` accepts (its ``__init__``'s, and its parents' where it
    passes ``**kwargs`` on), or ``None`` when the class cannot be imported."""
    try:
        cls = _import(class_path)
    except (ImportError, AttributeError, ValueError):
        return None
    names: list[str] = []
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else [cls]:
        try:
            signature = inspect.signature(klass.__init__ if inspect.isclass(klass) else klass)
            parameters = list(signature.parameters.values())
        except (TypeError, ValueError):
            break
        names += [p.name for p in parameters if p.name != "self" and p.kind in _NAMED]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return sorted(set(names))


def _import(class_path: str) -> Any:
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"{class_path!r} is not a dotted path.")
    return getattr(importlib.import_module(module_name), name)


def innermost_parse_error(message: str) -> str:
    """The innermost problem of a jsonargparse parse error, with the class it belongs to; ``message`` unchanged when
    it is no nested ``Union`` report (already short)."""
    if UNION_REPORT not in message:
        return message
    stack: list[_Frame] = []
    for raw in message.splitlines():
        text = raw.strip().removeprefix("- ").strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip(" -"))
        while stack and stack[-1].indent >= indent:
            stack.pop()
        found = _CLASS.fullmatch(text) or _KEY.fullmatch(text)
        if found:
            is_class = found.re is _CLASS
            stack.append(_Frame(indent, class_path=found[1] if is_class else None, key=None if is_class else found[1]))
            continue
        if text.startswith(_SCAFFOLD):
            continue
        return _describe(text, stack)
    return message


def _describe(problem: str, stack: list[_Frame]) -> str:
    """``problem`` (the innermost line), named after its class and key from the ``stack`` of frames above it."""
    classes = [frame for frame in stack if frame.class_path]
    if not classes:
        return problem
    owner = classes[-1]
    unknown = _UNKNOWN.fullmatch(problem)
    if unknown:
        known = accepted_options(owner.class_path or "")
        if known is not None:
            return unknown_options_message(_owner_name(owner.class_path or ""), [unknown[1]], known)
    keys = [frame.key for frame in stack[stack.index(owner) + 1 :] if frame.key]
    where = f"`{'.'.join(keys)}` of " if keys else ""
    return f"{where}{_owner_name(owner.class_path or '')}: {problem}"


def innermost_instantiation_error(error: BaseException) -> tuple[str, BaseException] | None:
    """For a class's ``__init__`` that raised while jsonargparse instantiated it (the error wrapped in a ``Union``
    report): ``("<Class>: <its own message>", its exception)``; ``None`` for any other error."""
    if UNION_REPORT not in str(error):
        return None
    inner: BaseException = error
    while inner.__cause__ is not None and UNION_REPORT in str(inner):
        inner = inner.__cause__
    if inner is error:
        return None
    classes = re.findall(r"class_path='([^']+)'", str(error))
    owner = f"{_owner_name(classes[0])}: " if classes else ""
    return f"{owner}{inner}", inner
