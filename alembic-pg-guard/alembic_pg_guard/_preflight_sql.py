"""The statement shapes the preflight (_preflight.py) measures, read without a SQL parser:
ALTER TABLE's type changes, SET NOT NULL, ADD CHECK / UNIQUE / PRIMARY KEY and VALIDATE
CONSTRAINT, and CREATE UNIQUE INDEX. A tokenizer (strings, quoted names, comments and
parentheses kept whole) and the grammar of each shape; anything else reads as nothing.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Only these can start a statement worth measuring: anything else costs one regex.
CANDIDATE = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(ALTER|CREATE)\b", re.I | re.S)
TOKEN = re.compile(
    r"""(?P<space>\s+|--[^\n]*|/\*.*?\*/)
    |(?P<str>[Ee]'(?:[^'\\]|''|\\.)*'|[BbXxNn]?'(?:[^']|'')*'|\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)\$)
    |(?P<qident>"(?:[^"]|"")*")
    |(?P<word>[A-Za-z_\x80-\uffff][\w$]*)
    |(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
    |(?P<op>::|[-+*/<>=~!@#%^&|`?]+|[(),;\[\].:]|\$\d+)""",
    re.S | re.X,
)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    start: int
    end: int

    def is_(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


def tokenize(sql: str) -> list[Tok] | None:
    """SQL tokens without whitespace and comments; None for text this tokenizer cannot read."""
    found, at = [], 0
    while at < len(sql):
        m = TOKEN.match(sql, at)
        if m is None:
            return None
        if m.lastgroup != "space":
            kind = "str" if m.group("str") is not None else m.lastgroup
            found.append(Tok(kind or "op", m.group(), m.start(), m.end()))
        at = m.end()
    return found


def closing(toks: Sequence[Tok], i: int) -> int:
    """The index of the `)` matching the `(` at `i` (len(toks) if none)."""
    depth = 0
    for j in range(i, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[j].text, 0) if toks[j].kind == "op" else 0
        if depth == 0:
            return j
    return len(toks)


def split(toks: Sequence[Tok], sep: str) -> list[list[Tok]]:
    """Split on `sep` outside parentheses and brackets."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for tok in toks:
        if tok.kind == "op" and tok.text in "([":
            depth += 1
        elif tok.kind == "op" and tok.text in ")]":
            depth -= 1
        if depth == 0 and tok.kind == "op" and tok.text == sep:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def strip_parens(toks: list[Tok]) -> list[Tok]:
    while len(toks) >= 2 and toks[0].text == "(" and closing(toks, 0) == len(toks) - 1:
        toks = toks[1:-1]
    return toks


@dataclass(frozen=True)
class Name:
    """An identifier as written in the statement (`sql`) and as the catalog holds it."""

    sql: str
    name: str

    @classmethod
    def of(cls, tok: Tok) -> "Name":
        if tok.kind == "qident":
            return cls(tok.text, tok.text[1:-1].replace('""', '"'))
        return cls(tok.text, tok.text.lower())


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class TypeChange:
    column: Name
    type_sql: str
    using: str | None
    using_toks: tuple[Tok, ...]


@dataclass(frozen=True)
class NotNull:
    column: Name


@dataclass(frozen=True)
class Check:
    expr: str


@dataclass(frozen=True)
class Validate:
    constraint: Name


@dataclass(frozen=True)
class Unique:
    keys: tuple[str, ...]
    nulls_distinct: bool = True
    primary: bool = False
    where: str | None = None
    index: Name | None = None  # CREATE UNIQUE INDEX IF NOT EXISTS: skipped when it exists
    concurrently: bool = False


Action = TypeChange | NotNull | Check | Validate | Unique


@dataclass(frozen=True)
class Parsed:
    table: str  # as written, for FROM and to_regclass
    actions: list[Action]


def text_of(sql: str, toks: Sequence[Tok]) -> str:
    return sql[toks[0].start : toks[-1].end] if toks else ""


def parse(sql: str) -> list[Parsed]:
    """The measurable parts of each statement in `sql`; statements of other shapes: none."""
    toks = tokenize(sql)
    if toks is None:
        return []
    found = []
    for stmt in split(toks, ";"):
        if stmt[0].is_("ALTER") and len(stmt) > 3 and stmt[1].is_("TABLE"):
            parsed = parse_alter(sql, stmt[2:])
        elif stmt[0].is_("CREATE") and len(stmt) > 3 and stmt[1].is_("UNIQUE"):
            parsed = parse_unique_index(sql, stmt[2:])
        else:
            parsed = None
        if parsed is not None and parsed.actions:
            found.append(parsed)
    return found


def table_name(toks: list[Tok], i: int) -> tuple[str, int] | None:
    """A possibly schema-qualified name at `i`, as written: (its text, the index after it)."""
    if i >= len(toks) or toks[i].kind not in ("word", "qident"):
        return None
    end = i + 1
    while end + 1 < len(toks) and toks[end].text == "." and toks[end + 1].kind != "op":
        end += 2
    return "".join(t.text for t in toks[i:end]), end


def parse_alter(sql: str, toks: list[Tok]) -> Parsed | None:
    i = 0
    if toks[i].is_("IF") and len(toks) > 2 and toks[i + 1].is_("EXISTS"):
        i += 2
    if i < len(toks) and toks[i].is_("ONLY"):
        i += 1
    named = table_name(toks, i)
    if named is None:
        return None
    table, i = named
    if i < len(toks) and toks[i].text == "*":
        i += 1
    actions = [a for part in split(toks[i:], ",") if (a := parse_action(sql, part))]
    return Parsed(table, actions)


def parse_action(sql: str, t: list[Tok]) -> Action | None:
    if t[0].is_("ALTER") and len(t) > 2:
        i = 2 if t[1].is_("COLUMN") else 1
        if i >= len(t) or t[i].kind not in ("word", "qident"):
            return None
        column, rest = Name.of(t[i]), t[i + 1 :]
        if len(rest) == 3 and rest[0].is_("SET") and rest[1].is_("NOT") and rest[2].is_("NULL"):
            return NotNull(column)
        if len(rest) > 2 and rest[0].is_("SET") and rest[1].is_("DATA"):
            rest = rest[2:]
        if len(rest) > 1 and rest[0].is_("TYPE"):
            return type_change(sql, column, rest[1:])
        return None
    if t[0].is_("VALIDATE") and len(t) == 3 and t[1].is_("CONSTRAINT"):
        return Validate(Name.of(t[2]))
    if not t[0].is_("ADD"):
        return None
    i = 1
    if i + 1 < len(t) and t[i].is_("CONSTRAINT"):
        i += 2
    if i + 1 < len(t) and t[i].is_("CHECK") and t[i + 1].text == "(":
        end = closing(t, i + 1)
        tail = [x.text.upper() for x in t[end + 1 :]]
        if "VALID" in tail or end >= len(t):  # NOT VALID: nothing is checked now
            return None
        return Check(text_of(sql, t[i + 2 : end]))
    primary = i + 1 < len(t) and t[i].is_("PRIMARY") and t[i + 1].is_("KEY")
    if not (primary or (i < len(t) and t[i].is_("UNIQUE"))):
        return None
    i += 2 if primary else 1
    nulls_distinct = True
    if i < len(t) and t[i].is_("NULLS"):
        nulls_distinct = not t[i + 1].is_("NOT")
        i += 3 if not nulls_distinct else 2
    if i >= len(t) or t[i].text != "(":  # USING INDEX: the index already holds
        return None
    end = closing(t, i)
    columns = [text_of(sql, c) for c in split(t[i + 1 : end], ",")]
    return Unique(tuple(columns), nulls_distinct, primary)


def type_change(sql: str, column: Name, t: list[Tok]) -> TypeChange:
    using_at = next((k for k, x in enumerate(t) if x.is_("USING")), None)
    type_toks = t[:using_at] if using_at is not None else t
    collate = next((k for k, x in enumerate(type_toks) if x.is_("COLLATE")), None)
    type_toks = type_toks[:collate] if collate is not None else type_toks
    using = t[using_at + 1 :] if using_at is not None else []
    return TypeChange(column, text_of(sql, type_toks), text_of(sql, using) or None, tuple(using))


def parse_unique_index(sql: str, t: list[Tok]) -> Parsed | None:
    """CREATE UNIQUE INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] t [USING m]
    (elements) [INCLUDE (...)] [NULLS [NOT] DISTINCT] [WITH (...)] [TABLESPACE x] [WHERE p]"""
    if not t[0].is_("INDEX"):
        return None
    i, concurrently, index = 1, False, None
    if i < len(t) and t[i].is_("CONCURRENTLY"):
        i, concurrently = i + 1, True
    if_not_exists = i + 2 < len(t) and t[i].is_("IF") and t[i + 2].is_("EXISTS")
    i += 3 if if_not_exists else 0
    if i < len(t) and not t[i].is_("ON"):
        index, i = Name.of(t[i]), i + 1
    if i >= len(t) or not t[i].is_("ON"):
        return None
    i += 2 if i + 1 < len(t) and t[i + 1].is_("ONLY") else 1
    named = table_name(t, i)
    if named is None:
        return None
    table, i = named
    if i + 1 < len(t) and t[i].is_("USING"):
        i += 2
    if i >= len(t) or t[i].text != "(":
        return None
    end = closing(t, i)
    keys = [index_key(sql, e) for e in split(t[i + 1 : end], ",")]
    if not all(keys):
        return None
    tail = t[end + 1 :]
    words = [x.text.upper() for x in tail]
    nulls_distinct = "NULLS" not in words or words[words.index("NULLS") + 1] != "NOT"
    where_at = next((k for k, x in enumerate(tail) if x.is_("WHERE")), None)
    where = text_of(sql, tail[where_at + 1 :]) if where_at is not None else None
    unique = Unique(
        tuple(k for k in keys if k),
        nulls_distinct,
        where=where,
        index=index if if_not_exists else None,
        concurrently=concurrently,
    )
    return Parsed(table, [unique])


def index_key(sql: str, e: list[Tok]) -> str | None:
    """An index element's expression: `col`, `(expr)` or `f(...)`, with its COLLATE; its
    opclass, ASC/DESC and NULLS FIRST/LAST do not change what is equal."""
    if not e:
        return None
    if e[0].text == "(":
        end = closing(e, 0)
    elif len(e) > 1 and e[1].text == "(" and e[0].kind in ("word", "qident"):
        end = closing(e, 1)
    elif e[0].kind in ("word", "qident"):
        end = 0
    else:
        return None
    key = e[: end + 1]
    if end + 2 < len(e) and e[end + 1].is_("COLLATE"):
        key = e[: end + 3]
    return text_of(sql, key)


def normal_type(type_sql: str) -> str:
    text = " ".join(type_sql.lower().split())
    return re.sub(r"\s*\)", ")", re.sub(r"\s*([(,])\s*", r"\1", text))


def cast_operand(using: Sequence[Tok], sql_of: Callable[[Sequence[Tok]], str]) -> str:
    """A USING expression without its outermost cast (`name::varchar(50)` -> `name`): what the
    cast would cut is measured on the value before it."""
    t = strip_parens(list(using))
    casts = [k for k, x in enumerate(t) if x.text == "::" and not inside(t, k)]
    if casts and all(x.kind != "op" or x.text in "(),[]." for x in t[casts[-1] + 1 :]):
        return sql_of(t[: casts[-1]])
    if len(t) > 3 and t[0].is_("CAST") and t[1].text == "(" and closing(t, 1) == len(t) - 1:
        inner = t[2:-1]
        as_at = [k for k, x in enumerate(inner) if x.is_("AS") and not inside(inner, k)]
        if as_at:
            return sql_of(inner[: as_at[-1]])
    return sql_of(t)


def inside(t: Sequence[Tok], k: int) -> bool:
    depth = 0
    for x in t[:k]:
        if x.kind == "op" and x.text in "([":
            depth += 1
        elif x.kind == "op" and x.text in ")]":
            depth -= 1
    return depth > 0
