"""The recipes shipped with the package (``zolightning/configs/*.yaml``, also ``configs/`` in the repository): listed
by ``zolightning recipes`` and named by ``--config NAME`` from any directory.

They ship inside the package so that a wheel install has them too: ``--config llm_mezo_bcd`` works wherever the
package is installed, with no clone of the repository.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from zolightning.functional.checks import did_you_mean

__all__ = ["RECIPES", "RecipeNotFound", "format_recipes", "recipe_summaries", "resolve_recipe", "with_recipes"]

RECIPES = Path(__file__).resolve().parent / "configs"
"""The folder of the shipped recipes."""

# A value that could be a recipe's name: no path separator, no YAML of its own (`--config '{trainer: ...}'`).
_BARE_NAME = re.compile(r"[\w.-]+")
_CONFIG_FLAGS = ("--config", "-c")


class RecipeNotFound(ValueError):
    """A ``--config`` value that is neither a file nor the name of a shipped recipe."""


def recipe_summaries(folder: Path = RECIPES) -> dict[str, str]:
    """``{name: first line of its opening comment}`` for every recipe in ``folder`` (default: the shipped ones),
    sorted by name, with "…" where the sentence goes on; ``""`` for a recipe that opens with no comment."""
    summaries = {}
    for path in sorted(folder.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").lstrip().splitlines()[:1]
        line = first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
        summaries[path.stem] = line if not line or line.endswith((".", ":", ")")) else line + " …"
    return summaries


def format_recipes(folder: Path = RECIPES) -> str:
    """What ``zolightning recipes`` prints: one line per recipe, its name then its summary, and how to run one."""
    summaries = recipe_summaries(folder)
    width = max((len(name) for name in summaries), default=0)
    lines = [f"{name:<{width}}  {summary}".rstrip() for name, summary in summaries.items()]
    lines.append(f"\nRun one with `zolightning fit --config NAME` (from any directory); the files are in {folder}.")
    return "\n".join(lines)


def resolve_recipe(value: str, folder: Path = RECIPES) -> str:
    """A ``--config`` value as the file to read: an existing path, a path with a separator or inline YAML as given;
    a bare name (``llm_mezo_bcd``, ``.yaml`` optional) is the shipped recipe of that name (``folder``, default the
    shipped recipes).

    Raises:
        RecipeNotFound: a bare name with no such file here and no such recipe, listing the recipes.
    """
    if Path(value).exists() or not _BARE_NAME.fullmatch(value):
        return value
    name = value.removesuffix(".yaml").removesuffix(".yml")
    recipe = folder / f"{name}.yaml"
    if recipe.is_file():
        return str(recipe)
    names = sorted(recipe_summaries(folder))
    raise RecipeNotFound(
        f"--config {value!r}: no such file in {Path.cwd()}, and no shipped recipe {name!r}"
        f"{did_you_mean([name], names)}."
        f" The recipes are {', '.join(names)} (`zolightning recipes` describes them); give a file by its path."
    )


def with_recipes(args: Sequence[str], folder: Path = RECIPES) -> list[str]:
    """``args`` with every ``--config``/``-c`` value (also ``--config=VALUE``) passed through :func:`resolve_recipe`."""
    resolved = list(args)
    for index, arg in enumerate(resolved):
        flag, equals, value = arg.partition("=")
        if equals and flag in _CONFIG_FLAGS:
            resolved[index] = f"{flag}={resolve_recipe(value, folder)}"
        elif index > 0 and resolved[index - 1] in _CONFIG_FLAGS:
            resolved[index] = resolve_recipe(arg, folder)
    return resolved
