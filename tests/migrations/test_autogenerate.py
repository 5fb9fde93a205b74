"""docs/migrations.md's autogenerate walkthrough, and the rename guard, in a scratch copy of the
project run through the alembic command line."""

from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.helpers import add_to_country_model, child_env, copy_project, fresh_database, run_python


def test_autogenerate_walkthrough_and_rename_guard(sync_engine: Engine, tmp_path: Path):
    """The documented workflow, for real: nothing to do → add a column → autogenerate → up →
    down; then a rename is refused by the guard, unless explicitly allowed."""
    project = copy_project(tmp_path / "project")
    versions = project / "alembic" / "versions"
    models = project / "src" / "models.py"
    with fresh_database(sync_engine) as url:
        env = child_env(url)

        def alembic(*args: str, **extra: str):
            return run_python("-m", "alembic", *args, cwd=project, env={**env, **extra})

        def new_files(before: set[Path]) -> list[Path]:
            return sorted(set(versions.glob("*.py")) - before)

        def columns() -> set[str]:
            engine = create_engine(url, poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    return set(
                        conn.scalars(
                            text(
                                "SELECT column_name FROM information_schema.columns "
                                "WHERE table_name = 'country'"
                            )
                        )
                    )
            finally:
                engine.dispose()

        assert alembic("upgrade", "head").returncode == 0
        files = set(versions.glob("*.py"))

        proc = alembic("revision", "--autogenerate", "-m", "nothing")
        assert proc.returncode == 0, proc.stderr
        assert "No schema changes detected: no revision written." in proc.stdout
        assert new_files(files) == []

        add_to_country_model(
            models, "    walkthrough_capital: Mapped[str | None] = mapped_column(String(100))"
        )
        proc = alembic("revision", "--autogenerate", "-m", "add capital")
        assert proc.returncode == 0, proc.stderr
        (revision_file,) = new_files(files)
        source = revision_file.read_text()
        assert "op.add_column" in source and "walkthrough_capital" in source
        assert "\t" not in source and source.endswith("\n")  # ruff formatted it

        assert alembic("upgrade", "head").returncode == 0
        assert "walkthrough_capital" in columns()
        proc = alembic("downgrade", "-1")
        assert proc.returncode == 0, proc.stderr
        assert "walkthrough_capital" not in columns()
        assert alembic("upgrade", "head").returncode == 0

        models.write_text(models.read_text().replace("walkthrough_capital", "walkthrough_city"))
        files = set(versions.glob("*.py"))
        proc = alembic("revision", "--autogenerate", "-m", "rename capital")
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "refusing to write a revision that drops and adds columns" in output
        assert "alter_column" in output and "new_column_name" in output
        assert "walkthrough_capital" in output and "walkthrough_city" in output
        assert "Traceback" not in output
        assert new_files(files) == []

        proc = alembic("-x", "allow_drop_add=1", "revision", "--autogenerate", "-m", "drop add")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        allowed.unlink()

        proc = alembic("revision", "--autogenerate", "-m", "drop add", ALEMBIC_ALLOW_DROP_ADD="1")
        assert proc.returncode == 0, proc.stderr
        (allowed,) = new_files(files)
        source = allowed.read_text()
        assert "op.drop_column" in source and "op.add_column" in source
