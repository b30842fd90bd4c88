"""``docs/architecture.md``'s layer table is the package's real import order: every ``import`` of the package is read
and checked against it, and the two rules the step rests on are checked by name."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def unit_of_file(path: Path) -> str:
    """The unit a source file belongs to: ``callbacks``, a package of ``zolightning`` (``engine``) or one of its
    top-level modules (``module``, ``__init__``)."""
    relative = path.relative_to(ROOT).parts
    if relative[0] == "callbacks":
        return "callbacks"
    return relative[1] if len(relative) > 2 else relative[1].removesuffix(".py")


def unit_of_import(name: str) -> str | None:
    """The unit an imported module name belongs to (``None`` outside the package)."""
    parts = name.split(".")
    if parts[0] != "zolightning":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def source_files() -> list[Path]:
    # zolightning/callbacks is where the installed package puts the repository's callbacks/ (a link in a checkout).
    package = [p for p in (ROOT / "zolightning").rglob("*.py") if "callbacks" not in p.relative_to(ROOT).parts]
    return sorted(package) + sorted((ROOT / "callbacks").glob("*.py"))


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module name ``path`` imports (at any depth: functions' imports too), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:  # `from zolightning import engine` names a unit too
                yield f"{node.module}.{alias.name}", node.lineno


def layer_table() -> dict[str, int]:
    """unit → layer, from the table's rows: every backticked path in a row's package column."""
    layers: dict[str, int] = {}
    for line in DOC.read_text().splitlines():
        row = re.match(r"\| (\d) \| (.+?) \|", line)
        if row is None:
            continue
        for path in re.findall(r"`([^`]+)`", row.group(2)):
            if path.startswith("callbacks/"):
                unit = "callbacks"
            else:
                path = path if path.startswith("zolightning/") else f"zolightning/{path}"
                assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"
                unit = path.split("/")[1].removesuffix(".py")
            assert unit not in layers, f"docs/architecture.md puts {unit} in two layers"
            layers[unit] = int(row.group(1))
    return layers


def test_the_layer_table_names_every_part_of_the_package_once():
    table = layer_table()
    units = {unit_of_file(path) for path in source_files()}
    assert units - set(table) == set(), "parts of the package that docs/architecture.md's layer table leaves out"
    assert set(table) - units == set(), "the layer table names parts the package does not have"


def test_every_import_goes_to_a_lower_layer_or_its_own():
    table = layer_table()
    upward = []
    for path in source_files():
        unit = unit_of_file(path)
        for name, line in imports(path):
            target = unit_of_import(name)
            if target is not None and target in table and table[target] > table[unit]:
                upward.append(f"{path.relative_to(ROOT)}:{line} (layer {table[unit]}) imports {name} "
                              f"(layer {table[target]})")
    assert not upward, "imports that go up the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges: dict[str, set[str]] = {}
    for path in source_files():
        unit = unit_of_file(path)
        for name, _ in imports(path):
            target = unit_of_import(name)
            if target is not None and target != unit:
                edges.setdefault(unit, set()).add(target)
    done: set[str] = set()

    def visit(unit: str, trail: tuple[str, ...]) -> None:
        if unit in trail:
            pytest.fail("an import cycle: " + " -> ".join((*trail[trail.index(unit):], unit)))
        if unit in done:
            return
        for target in sorted(edges.get(unit, ())):
            visit(target, (*trail, unit))
        done.add(unit)

    for unit in sorted(edges):
        visit(unit, ())


def files_of(unit: str) -> list[Path]:
    return [path for path in source_files() if unit_of_file(path) == unit]


def test_the_engine_never_imports_the_optimizers():
    """The engine measures for an update it knows only as data (``UpdateTarget``): it cannot call it back."""
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in files_of("engine")
             for name, line in imports(path) if unit_of_import(name) == "optim"]
    assert not found, found


def test_functional_holds_no_process_group_and_no_thread():
    """Layer 1 is pure functions and value objects: the collectives and the noise threads live in the engine.
    (The compiled noise kernels may hold a ``threading.Lock`` around numba's work queue and their lazy loading: a
    lock starts no thread.)"""
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in files_of("functional")
             for name, line in imports(path)
             if name.split(".")[:2] == ["torch", "distributed"] or name.endswith("ThreadPoolExecutor")
             or name == "threading.Thread"]
    found += [f"{path.relative_to(ROOT)} starts a thread" for path in files_of("functional")
              if "Thread(" in path.read_text() or "ThreadPoolExecutor(" in path.read_text()]
    assert not found, found
