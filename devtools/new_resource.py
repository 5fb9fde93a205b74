"""`pipenv run new-resource NAME`: a resource served at /NAME like /country, ready to extend.

Writes src/NAME/ (routes, queries, schemas), its model in src/models.py (@cached), its
registry line in src/resources.py, tests/NAME/test_routes.py and its rows in docs/api.md;
writes no revision.
Then: `pipenv run alembic-revision -m "add NAME"`, `pipenv run migrate`, `pipenv run test`.
docs/resources.md tells what each file is for.
"""

import argparse
import keyword
import re
import subprocess
import sys
from pathlib import Path

from src.cli import CommandFailure, fail_on_errors
from src.config import PROJECT_ROOT

TEMPLATES = Path(__file__).with_name("templates")
NAME = re.compile(r"^[a-z][a-z0-9]{1,30}$")
REGISTRY = "RESOURCES: tuple[Resource, ...] = ("
MODEL_NAMES = ("BigInteger", "Identity", "Text")  # what the model template uses
FILES = {  # template -> where it goes
    "resource_routes.py.tmpl": "src/{name}/routes.py",
    "resource_queries.py.tmpl": "src/{name}/queries.py",
    "resource_schemas.py.tmpl": "src/{name}/schemas.py",
    "resource_test_routes.py.tmpl": "tests/{name}/test_routes.py",
}


class ScaffoldError(CommandFailure):
    """The name cannot be a resource: one line saying why."""


def plural(name: str) -> str:
    """English, for the common cases (currency → currencies, tax → taxes, city → cities)."""
    if name.endswith("y") and name[-2:-1] not in tuple("aeiou"):
        return name[:-1] + "ies"
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


def check_name(name: str, root: Path) -> None:
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r}: a resource name is 2 to 31 lowercase letters or digits, starting with "
            "a letter (it is the URL path, the package and the table), e.g. currency"
        )
    for taken in (root / "src" / name, root / "tests" / name):
        if taken.exists():
            raise ScaffoldError(f"{taken.relative_to(root)} exists already: pick another name")
    if re.search(rf'__tablename__ = "{name}"', (root / "src" / "models.py").read_text()):
        raise ScaffoldError(f"src/models.py has a table {name!r} already")


def scaffold(name: str, root: Path = PROJECT_ROOT) -> list[Path]:
    check_name(name, root)
    words = {"name": name, "Model": name.capitalize(), "plural": plural(name)}
    written = []
    for template, target in FILES.items():
        path = root / target.format(**words)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((TEMPLATES / template).read_text().format(**words))
        written.append(path)
    (root / "src" / name / "__init__.py").write_text(f'"""The /{name} resource."""\n')
    (root / "tests" / name / "__init__.py").write_text("")
    written += [root / "src" / name / "__init__.py", root / "tests" / name / "__init__.py"]
    models = root / "src" / "models.py"
    model = (TEMPLATES / "resource_model.py.tmpl").read_text().format(**words)
    models.write_text(with_imports(models.read_text(), MODEL_NAMES).rstrip("\n") + "\n" + model)
    registry = root / "src" / "resources.py"
    text = registry.read_text()
    if REGISTRY not in text:
        raise ScaffoldError(f"src/resources.py has no `{REGISTRY}` line to add {name} to")
    start = text.index(REGISTRY)
    end = text.index("\n)", start)  # the tuple's closing line: the new one goes last
    text = f"{text[:end]}\n    {name},{text[end:]}"
    anchor = "from src.kit.resource import"
    text = text.replace(anchor, f"from src.{name}.routes import resource as {name}\n{anchor}", 1)
    registry.write_text(text)
    written += [models, registry, document(root, name)]
    tidy(written, root)
    return written


def document(root: Path, name: str) -> Path:
    """Its endpoints in docs/api.md's table, before /health (the README test reads it)."""
    path = root / "docs" / "api.md"
    rows = [
        f"| `GET /{name}` | {plural(name)} by code, paged (`limit`, `cursor`), `q`: by name |",
        f"| `GET /{name}/{{code}}` | one {name} by code, any case |",
        f"| `POST /{name}` | create one → 201 + `Location` |",
        f"| `PATCH /{name}/{{code}}` | change the fields sent → 204 (`If-Match`: conditional) |",
        f"| `DELETE /{name}/{{code}}` | delete it → 204 |",
    ]
    text, anchor = (path.read_text() if path.exists() else ""), "| `GET /health` |"
    if anchor in text:
        path.write_text(text.replace(anchor, "\n".join([*rows, anchor]), 1))
    return path


def with_imports(source: str, names: tuple[str, ...]) -> str:
    """`source` whose `from sqlalchemy import ...` also names `names` (ruff sorts them)."""
    match = re.search(r"^from sqlalchemy import (?:\(([^)]*)\)|([^\n(]+))$", source, re.M)
    if match is None:
        raise ScaffoldError("src/models.py has no `from sqlalchemy import ...` to extend")
    have = [n.strip() for n in (match[1] or match[2]).split(",") if n.strip()]
    line = f"from sqlalchemy import {', '.join([*have, *(n for n in names if n not in have)])}"
    return source[: match.start()] + line + source[match.end() :]


def tidy(paths: list[Path], root: Path) -> None:
    """The project's ruff: imports sorted, lines wrapped, as the hooks would."""
    ruff = Path(sys.executable).with_name("ruff")
    files = [str(p) for p in paths if p.suffix == ".py"]
    for args in (["check", "--fix", "--quiet", "--select", "I,F401"], ["format", "--quiet"]):
        subprocess.run([str(ruff), *args, *files], cwd=root, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipenv run new-resource", description=__doc__)
    parser.add_argument("name", help="lowercase, e.g. currency: /currency, src/currency/")
    args = parser.parse_args(argv)
    with fail_on_errors():
        written = scaffold(args.name)
        print("\n".join(f"wrote {p.relative_to(PROJECT_ROOT)}" for p in written))
        print(
            f'next: pipenv run alembic-revision -m "add {args.name}" (its table and cache '
            "trigger), pipenv run migrate, pipenv run test"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
