"""A revision file's content fingerprint: what it does, not how it is written.

The hash is of the module's syntax tree, so formatting, comments and `ruff format` do not
change it; docstrings, imports (linters sort and prune them), annotations and the guard's
and Alembic's bookkeeping names are left out too. Any change to a statement, a literal
(SQL, data) or a helper changes it. The tree is serialised by hand, skipping empty
fields: `ast.dump` differs between Python versions.
"""

import ast
import hashlib
from pathlib import Path

# Stored with the hash: a fingerprint of another format is re-recorded, never compared.
FORMAT = "ast1"
# Module-level names that say where a revision sits (the chain hash covers them) or how
# the gates treat it, not what it does.
BOOKKEEPING = frozenset(
    {"revision", "down_revision", "branch_labels", "depends_on", "squawk_allow", "not_valid_allow"}
)
# Fields that never change what runs: type hints, `u""` prefixes.
IGNORED_FIELDS = frozenset({"annotation", "returns", "type_comment", "type_params", "kind"})


def fingerprint(path: str | Path | None) -> str | None:
    """`FORMAT:sha256` of the revision file at `path`; None without a readable .py source
    (a sourceless .pyc revision): such a revision is not compared."""
    if path is None or not str(path).endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    body = [s for s in tree.body if not _bookkeeping(s)]
    digest = hashlib.sha256(repr(_shape(body)).encode()).hexdigest()
    return f"{FORMAT}:{digest}"


def comparable(stored: str | None) -> bool:
    return stored is not None and stored.startswith(f"{FORMAT}:")


def _bookkeeping(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AnnAssign):
        targets = [statement.target]
    else:
        return False
    return all(isinstance(t, ast.Name) and t.id in BOOKKEEPING for t in targets)


def _noise(statement: object) -> bool:
    """Docstrings (any bare string statement: a no-op) and imports."""
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return True
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _shape(node: object) -> object:
    if isinstance(node, list):
        return [_shape(n) for n in node if not _noise(n)]
    if not isinstance(node, ast.AST):
        return node
    fields = [
        (name, _shape(value))
        for name, value in ast.iter_fields(node)
        if name not in IGNORED_FIELDS and value is not None and value != []
    ]
    return (type(node).__name__, fields)
