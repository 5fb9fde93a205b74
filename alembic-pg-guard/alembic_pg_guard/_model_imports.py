"""A revision that imports the app's models: they are the current code, not the schema at
that revision, so it breaks (or writes columns that do not exist yet) once they change.

Found statically: the revision file's imports (its AST) against the modules that define
mapped classes, as loaded in this process by env.py (its target metadata's models).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from sqlalchemy import MetaData, Table

FIX = (
    "the models are the current code, not the schema at this revision; describe only what "
    "it touches with lightweight tables: sa.table('<table>', sa.column('<name>', sa.String), "
    "...), as they are at this revision"
)


def model_modules(metadata: MetaData | None = None) -> frozenset[str]:
    """Modules defining declarative classes mapped to tables (of `metadata`, when given)."""
    found = set()
    for name, module in list(sys.modules.items()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if not isinstance(value, type) or value.__module__ != name:
                continue
            table = vars(value).get("__table__")
            if isinstance(table, Table) and (metadata is None or table.metadata is metadata):
                found.add(name)
                break
    return frozenset(found)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each absolute import in the file; `from a import b` gives both a
    and a.b (b may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def model_imports(path: Path, modules: frozenset[str]) -> list[tuple[int, str]]:
    """The imports of `path` that load one of `modules`."""
    return [(line, name) for line, name in imported_modules(path) if name in modules]


def describe(
    path: Path, revision: str, shown_as: str, modules: frozenset[str] | None = None
) -> str | None:
    """One line naming the import (the file `shown_as`), the cause and the fix; None when
    it imports no models (`modules`: else those loaded now)."""
    found = model_imports(path, model_modules() if modules is None else modules)
    if not found:
        return None
    line, name = found[0]
    return f"{shown_as}:{line}: {revision} imports the app's models ({name}): {FIX}"


def failure_hint(path: str | None) -> str | None:
    """For a failed revision's one line: the models it imports, why that breaks, the fix."""
    if not path or not path.endswith(".py"):
        return None
    found = model_imports(Path(path), model_modules())
    if not found:
        return None
    line, name = found[0]
    return f"it imports the app's models ({name}, line {line}): {FIX}"
