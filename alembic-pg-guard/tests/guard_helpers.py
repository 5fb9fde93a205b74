"""The guard's tests' one shared helper: a standalone Alembic project, made the way the
README says (`alembic init`, one model, env.py's lines from the README), on a database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import URL

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MODELS = """from sqlalchemy import BigInteger, Identity, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    __tablename__ = "gadget"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
"""

# A revision body that creates MODELS' table.
CREATE_GADGET = """def upgrade():
    op.create_table(
        "gadget",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
    )


def downgrade():
    op.drop_table("gadget")
"""

# The first lines of Alembic's own env.py template.
ALEMBIC_LOGGING = """from logging.config import fileConfig

from alembic import context

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)

"""


def readme_env_lines() -> str:
    """The env.py block of the README, its models import pointed at this project's."""
    readme = (PACKAGE_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (block,) = [b for b in blocks if "from alembic import context" in b]
    block = "\n".join(line.strip() for line in block.splitlines())
    return block.replace("from myapp.models import Base", "from models import Base")


@dataclass
class Project:
    """An Alembic project in `root` on the database `url`; commands run with `env`."""

    root: Path
    url: URL
    env: dict[str, str] = field(default_factory=dict)

    @property
    def versions(self) -> Path:
        return self.root / "alembic" / "versions"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def alembic(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "alembic", *args)

    def guard(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "alembic_pg_guard", *args)

    def revision_files(self) -> list[Path]:
        return sorted(self.versions.glob("*.py"))


def make_project(root: Path, url: URL, env: dict[str, str]) -> Project:
    """`alembic init`, models.py, env.py = Alembic's logging setup + the README's lines,
    sqlalchemy.url = `url` (the guard's default settings)."""
    root.mkdir(parents=True)
    project = Project(root, url, env)
    init = project.alembic("init", "alembic")
    assert init.returncode == 0, init.stderr
    (root / "models.py").write_text(MODELS)
    (root / "alembic" / "env.py").write_text(ALEMBIC_LOGGING + readme_env_lines())
    ini = root / "alembic.ini"
    text = ini.read_text()
    rendered = url.render_as_string(hide_password=False).replace("%", "%%")
    text = re.sub(r"^sqlalchemy\.url = .*$", f"sqlalchemy.url = {rendered}", text, flags=re.M)
    ini.write_text(text)
    return project


def install_from_path(target: Path) -> Path:
    """The package installed from (a copy of) its folder into `target`, as a project's
    `pip install ./alembic-pg-guard` would; no dependencies: this interpreter has them.
    The copy keeps the build's leftovers (build/, *.egg-info) out of the repository."""
    source = target.parent / f"{target.name}-source"
    ignore = shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__")
    shutil.copytree(PACKAGE_ROOT, source, ignore=ignore)
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    try:
        import setuptools  # noqa: F401  (present: build here, without fetching it)

        args.append("--no-build-isolation")
    except ImportError:
        pass
    proc = subprocess.run([*args, str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


def clean_env(**extra: str) -> dict[str, str]:
    """No settings of the surrounding project: PATH, HOME and locale only, then `extra`.
    No bytecode: a revision edited within the second keeps its size, and a stale .pyc wins."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"} | extra
