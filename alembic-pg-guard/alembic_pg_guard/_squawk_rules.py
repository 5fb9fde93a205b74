"""What the squawk gate adds to squawk: the Alembic form of the fix for the common rules,
and the varchar widening that squawk flags although PostgreSQL does not rewrite for it.

No advice here may leave an INVALID index behind: a concurrent build that failed leaves
one, and `if_not_exists=True` would then record success. The fix drops the leftover
first (DROP INDEX CONCURRENTLY IF EXISTS).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

RULES_URL = "https://squawkhq.com/docs/"

CONCURRENT_INDEX = (
    "with op.get_context().autocommit_block(): "
    'op.drop_index("{index}", table_name="{table}", postgresql_concurrently=True, '
    'if_exists=True); op.create_index("{index}", "{table}", [...], '
    "postgresql_concurrently=True) (the drop removes an INVALID leftover of a failed build, "
    "which IF NOT EXISTS would keep), in a revision with nothing transactional, and "
    'squawk_allow = {{"prefer-robust-stmts": "the leftover is dropped first"}}'
)
NOT_VALID_THEN_VALIDATE = (
    '{create}(..., postgresql_not_valid=True) in this revision, then op.execute("ALTER '
    'TABLE {table} VALIDATE CONSTRAINT {constraint}") in the next one'
)
EXPAND_CONTRACT = (
    "expand/contract: add the new {what} next to the old one and backfill it, release code "
    "that uses the new one, then drop the old one in a later revision (the compat check "
    "tells when no released code reads it)"
)

# rule -> the Alembic fix; {table}, {column}, {index}, {constraint} come from the statement.
FIXES: dict[str, str] = {
    "require-concurrent-index-creation": CONCURRENT_INDEX,
    "ban-concurrent-index-creation-in-transaction": CONCURRENT_INDEX,
    "require-concurrent-index-deletion": (
        "with op.get_context().autocommit_block(): "
        'op.drop_index("{index}", table_name="{table}", postgresql_concurrently=True, '
        "if_exists=True)"
    ),
    "adding-required-field": (
        'op.add_column("{table}", sa.Column("{column}", ..., nullable=True)) or with a '
        'constant server_default=sa.text("..."); backfill in batches; then NOT NULL the '
        "safe way, in a later revision (the fix for adding-not-nullable-field)"
    ),
    "adding-not-nullable-field": (
        "with op.get_context().autocommit_block(): "
        'op.create_check_constraint(op.f("{table}_{column}_not_null"), "{table}", '
        '"{column} IS NOT NULL", postgresql_not_valid=True); op.execute("ALTER TABLE {table} '
        'VALIDATE CONSTRAINT {table}_{column}_not_null"); op.alter_column("{table}", '
        '"{column}", nullable=False); op.drop_constraint(op.f("{table}_{column}_not_null"), '
        '"{table}", type_="check") (op.f: the name as written, not the naming convention\'s)'
    ),
    "constraint-missing-not-valid": NOT_VALID_THEN_VALIDATE.replace(
        "{create}", "op.create_foreign_key / op.create_check_constraint"
    ),
    "adding-foreign-key-constraint": NOT_VALID_THEN_VALIDATE.replace(
        "{create}", "op.create_foreign_key"
    ),
    "disallowed-unique-constraint": (
        "with op.get_context().autocommit_block(): "
        'op.drop_index("{constraint}", table_name="{table}", postgresql_concurrently=True, '
        'if_exists=True); op.create_index("{constraint}", "{table}", [...], unique=True, '
        'postgresql_concurrently=True); then op.execute("ALTER TABLE {table} ADD '
        'CONSTRAINT {constraint} UNIQUE USING INDEX {constraint}")'
    ),
    "adding-serial-primary-key-field": (
        "build a unique index CONCURRENTLY as for disallowed-unique-constraint, then "
        'op.execute("ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING '
        'INDEX ...")'
    ),
    "changing-column-type": (
        EXPAND_CONTRACT.format(what="column")
        + "; a varchar widening (String(n) -> String(m > n) or Text) passes as it is; a cast "
        'PostgreSQL cannot do implicitly needs postgresql_using="{column}::<type>"'
    ),
    "adding-field-with-default": (
        "a constant server_default (sa.text(\"'x'\"), now()) is instant on PostgreSQL 11+; "
        'for a volatile one: op.add_column("{table}", sa.Column("{column}", ..., '
        "nullable=True)), backfill in batches, then op.alter_column(..., server_default=...)"
    ),
    "ban-drop-column": (
        "drop it only once no released code reads it (the compat check), then allow "
        "it with that reason"
    ),
    "ban-drop-table": (
        "drop it only once no released code reads it (the compat check), then allow "
        "it with that reason"
    ),
    "renaming-column": (
        EXPAND_CONTRACT.format(what="column")
        + '; or, if no running code reads it: op.alter_column("{table}", "{column}", '
        'new_column_name="<new>") with an allowance'
    ),
    "renaming-table": (
        EXPAND_CONTRACT.format(what="table")
        + '; or op.rename_table("{table}", "<new>") plus op.execute("CREATE VIEW {table} AS '
        'SELECT * FROM <new>") for the old code, dropped in a later revision'
    ),
    "prefer-text-field": (
        'sa.Text() with sa.CheckConstraint("char_length({column}) <= <n>"), or allow it with '
        "a reason (a fixed-length code)"
    ),
    "prefer-bigint-over-int": "sa.BigInteger()",
    "prefer-identity": 'sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True)',
    "prefer-timestamp-tz": "sa.DateTime(timezone=True)",
}
ROBUST_DROP = "if_exists=True on the drop (op.drop_index/op.drop_constraint/op.drop_table)"

NAMES = {
    "table": re.compile(
        r"\b(?:ALTER TABLE(?: ONLY)?|DROP TABLE(?: IF EXISTS)?|CREATE TABLE(?: IF NOT EXISTS)?"
        r"|ON|REFERENCES) (\"?[\w.]+\"?)",
        re.IGNORECASE,
    ),
    "column": re.compile(
        r"\b(?:ADD COLUMN(?: IF NOT EXISTS)?|ALTER COLUMN|DROP COLUMN(?: IF EXISTS)?"
        r"|RENAME COLUMN) (\"?\w+\"?)",
        re.IGNORECASE,
    ),
    "index": re.compile(
        r"\bINDEX(?: CONCURRENTLY)?(?: IF (?:NOT )?EXISTS)? (\"?[\w.]+\"?)", re.IGNORECASE
    ),
    "constraint": re.compile(r"\bCONSTRAINT (\"?\w+\"?)", re.IGNORECASE),
}


def call_at(path: str | Path | None, line: int | None, name: str | None = None) -> ast.Call | None:
    """The op.<name>(...) call (any op call if `name` is None) that starts at `line`."""
    if path is None or line is None:
        return None
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and node.lineno == line
            and isinstance(node.func, ast.Attribute)
            and (name is None or node.func.attr == name)
        ):
            return node
    return None


def names_in(sql: str, path: str | Path | None = None, line: int | None = None) -> dict[str, str]:
    """The table, column, index and constraint a statement names ('<table>' when it does
    not; DROP INDEX names no table, so the op call's table_name= is read)."""
    found = {}
    for kind, pattern in NAMES.items():
        match = pattern.search(sql)
        found[kind] = match.group(1).strip('"') if match else f"<{kind}>"
    call = call_at(path, line)
    for keyword in call.keywords if call and found["table"] == "<table>" else []:
        if keyword.arg == "table_name" and isinstance(keyword.value, ast.Constant):
            found["table"] = str(keyword.value.value)
    return found


def fix_for(
    rule: str, sql: str, path: str | Path | None = None, line: int | None = None
) -> str | None:
    """The Alembic form of the fix for `rule` on statement `sql` (emitted at `line` of the
    revision file `path`), if the project has one."""
    if rule == "prefer-robust-stmts":
        if re.search(r"\bCREATE\b.*\bINDEX CONCURRENTLY\b", sql, re.IGNORECASE):
            return (
                "do not add IF NOT EXISTS here: after a failed build it would keep the "
                "INVALID index; drop the leftover first instead: "
                + CONCURRENT_INDEX.format_map(names_in(sql, path, line))
            )
        if re.match(r"\s*(DROP|ALTER TABLE \S+ DROP)\b", sql, re.IGNORECASE):
            return ROBUST_DROP
        return "make the step re-runnable, or keep it inside the revision's transaction"
    if rule == "constraint-missing-not-valid" and re.search(r"\bUNIQUE\b", sql, re.I):
        rule = "disallowed-unique-constraint"  # PostgreSQL has no NOT VALID for UNIQUE
    template = FIXES.get(rule)
    return template.format_map(names_in(sql, path, line)) if template else None


# --- the varchar widening ------------------------------------------------------------

WIDENING_RULES = frozenset({"changing-column-type", "prefer-text-field"})
BARE_TYPE_CHANGE = re.compile(
    r"^ALTER TABLE \S+ ALTER COLUMN \S+ TYPE (VARCHAR(\(\d+\))?|TEXT);$", re.IGNORECASE
)
STRING_TYPES = {"String", "VARCHAR", "Unicode", "NVARCHAR"}
TEXT_TYPES = {"Text", "TEXT", "UnicodeText"}


def _string_length(node: ast.expr | None) -> tuple[bool, int | None] | None:
    """(is text, length) of a literal sa.String(n) / VARCHAR / Text expression, else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in TEXT_TYPES:
        return True, None
    if name not in STRING_TYPES:
        return None
    length = node.args[0] if node.args else None
    for keyword in node.keywords:
        if keyword.arg == "length":
            length = keyword.value
    if length is None:
        return False, None
    if isinstance(length, ast.Constant) and isinstance(length.value, int):
        return False, length.value
    return None


def is_varchar_widening(path: str | Path, source_line: int | None, sql: str) -> bool:
    """An op.alter_column at `source_line` going from varchar(n) to varchar(m >= n),
    varchar or text, with no USING: PostgreSQL changes only the catalog, no rewrite."""
    if source_line is None or not BARE_TYPE_CHANGE.match(" ".join(sql.split())):
        return False
    node = call_at(path, source_line, "alter_column")
    if node is None:
        return False
    kwargs = {k.arg: k.value for k in node.keywords}
    old = _string_length(kwargs.get("existing_type"))
    new = _string_length(kwargs.get("type_"))
    if "postgresql_using" in kwargs or old is None or new is None or old[0]:
        return False  # unknown, or from text (to varchar(n) means a length check)
    old_len, (new_text, new_len) = old[1], new
    return new_text or new_len is None or (old_len is not None and new_len >= old_len)


def rule_url(rule: str) -> str:
    return f"{RULES_URL}{rule}"


# --- the guard's own rules, on what a revision runs ----------------------------------

DO_BLOCK = "do-block"
DISABLE_TRIGGER = "disable-trigger"
NARROWING = "narrowing-type-change"
OWN_RULES = frozenset({DO_BLOCK, DISABLE_TRIGGER, NARROWING})
DO_STATEMENT = re.compile(r"^\s*DO\b", re.IGNORECASE)
DISABLES_TRIGGER = re.compile(r"^\s*ALTER\s+TABLE\b.*\bDISABLE\s+TRIGGER\b", re.I | re.S)
TYPE_CHANGE = re.compile(
    r"\bALTER\s+(?:COLUMN\s+)?(\"[^\"]+\"|\w+)\s+(?:SET\s+DATA\s+)?TYPE\s+(.+?)"
    r"(?:\s+USING\s+(.+?))?\s*(?=,\s*(?:ALTER|ADD|DROP)\b|;?\s*$)",
    re.IGNORECASE | re.DOTALL,
)
# A USING expression that cuts values whatever the new type: cut strings, rounded numbers.
TRUNCATING_CALL = re.compile(r"\b(left|substr|substring|trunc|round)\s*\(", re.IGNORECASE)
USING_CAST = re.compile(r"::\s*([a-z][\w ]*?(?:\(\s*\d+(?:\s*,\s*\d+)?\s*\))?)\s*$", re.I)
INT_RANK = {"smallint": 1, "int2": 1, "integer": 2, "int": 2, "int4": 2, "bigint": 3, "int8": 3}
STRING_NAMES = {"varchar", "character varying", "char", "character", "bpchar", "text"}
NUMERIC_NAMES = {"numeric", "decimal"}


def parse_type(text: str) -> tuple[str, tuple[int, ...] | None]:
    """('string' | 'numeric' | 'int' | the name, its sizes or None when unbounded)."""
    text = " ".join(text.lower().replace('"', "").split())
    text = re.split(r"\s+collate\s+", text)[0]
    match = re.match(r"^([a-z][a-z0-9 ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?(\[\])?$", text)
    if match is None:
        return text, None
    name, first, second, array = match.groups()
    sizes = tuple(int(n) for n in (first, second) if n is not None) or None
    if array:
        return f"{name}[]", sizes
    if name in STRING_NAMES:
        if name in {"char", "character", "bpchar"} and sizes is None:
            return "string", (1,)
        return "string", None if name == "text" else sizes
    if name in NUMERIC_NAMES:
        return "numeric", (*sizes, 0)[:2] if sizes else None
    if name in INT_RANK:
        return "int", (INT_RANK[name],)
    return name, sizes


def narrows(old: str, new: str) -> bool:
    """Whether values of type `old` may not fit `new` (a shorter string, less precision or
    scale, a smaller integer, a fraction to an integer): Atlas calls these data-dependent."""
    (old_kind, old_size), (new_kind, new_size) = parse_type(old), parse_type(new)
    if old_kind == new_kind == "string":
        return new_size is not None and (old_size is None or new_size[0] < old_size[0])
    if old_kind == new_kind == "numeric":
        if new_size is None:
            return False
        if old_size is None:
            return True
        (p, s), (old_p, old_s) = new_size, old_size
        return s < old_s or p - s < old_p - old_s
    if old_kind == new_kind == "int":
        return bool(new_size and old_size and new_size[0] < old_size[0])
    if new_kind == "int" and old_kind == "numeric":
        return True
    if new_kind == "numeric" and new_size is not None and old_kind == "int":
        return new_size[0] - new_size[1] < (5, 10, 19)[old_size[0] - 1] if old_size else True
    return False


def narrowing_changes(sql: str, old_types: dict[str, str]) -> list[str]:
    """'country.name varchar(200) -> VARCHAR(50)' for each column type change in `sql` that
    may lose data: by its new type, or by a USING that cuts (left(), ::varchar(n), ...)."""
    table = names_in(sql)["table"]
    found = []
    for match in TYPE_CHANGE.finditer(sql):
        quoted, new, using = match.group(1), match.group(2).strip(), match.group(3)
        column = quoted[1:-1] if quoted.startswith('"') else quoted.lower()
        old = old_types.get(column)
        why = None
        if old is not None and narrows(old, new):
            why = f"{old} -> {new}"
        elif using and TRUNCATING_CALL.search(using):
            why = f"USING {' '.join(using.split())} cuts values"
        elif (
            using
            and (cast := USING_CAST.search(using))
            and (narrows(old, cast.group(1)) if old else parse_type(cast.group(1))[1] is not None)
        ):
            why = f"USING {' '.join(using.split())} cuts values"
        if why:
            found.append(f"{table}.{column} {why}")
    return found


def old_types_from_call(path: str | Path | None, line: int | None) -> dict[str, str]:
    """Offline, an op.alter_column's existing_type (literal String/Text only) is the old type."""
    call = call_at(path, line, "alter_column")
    if call is None or len(call.args) < 2 or not isinstance(call.args[1], ast.Constant):
        return {}
    existing = {k.arg: k.value for k in call.keywords}.get("existing_type")
    found = _string_length(existing)
    if found is None:
        return {}
    is_text, length = found
    column = str(call.args[1].value)
    return {column: "text" if is_text or length is None else f"character varying({length})"}


def own_rules(
    sql: str, old_types: dict[str, str], path: str | Path | None = None, line: int | None = None
) -> list[tuple[str, str]]:
    """(rule, message) for each of the guard's own rules `sql` breaks; each message ends
    with the fix or the allowance."""
    found = []
    if DO_STATEMENT.match(sql):
        found.append(
            (
                DO_BLOCK,
                "a DO block runs procedural code that no gate lints: the DDL inside it and "
                "the locks it takes go unchecked; write its statements as op calls or plain "
                "op.execute() statements (read what decides whether they run with "
                "op.get_bind() in Python), or say why it is safe: "
                'squawk_allow = {"do-block": "<why>"}',
            )
        )
    if DISABLES_TRIGGER.match(sql):
        found.append(
            (
                DISABLE_TRIGGER,
                "DISABLE TRIGGER turns the trigger off for every session, not only this "
                "revision: writes meanwhile skip it (cache NOTIFYs, audit rows), and a failure "
                "before ENABLE leaves it off; do the work with the trigger on, or say why it "
                'is safe: squawk_allow = {"disable-trigger": "<why>"}',
            )
        )
    changes = narrowing_changes(sql, old_types or old_types_from_call(path, line))
    if changes:
        found.append(
            (
                NARROWING,
                f"{'; '.join(changes)}: a narrowing type change may lose data (values that "
                "do not fit are cut by the cast, or fail the upgrade on rows only production "
                "has); the runner measures the rows before running it and refuses when any "
                "would not fit; widen instead, or move to a new column by expand/contract, or "
                'say why no data is lost: squawk_allow = {"narrowing-type-change": "<why>"}',
            )
        )
    return found
