"""The API's least-privilege role, kept by the migration runner.

The runner logs in as the schema owner and, under the migration lock, makes the
app role (GuardSettings.app_role) a login role that may only read and write the app's rows: DML on
every table and sequence of the schema, now and later (default privileges), read-only on
`alembic_version` and `alembic_version_history` (which /ready reads), no DDL, no temporary
tables, no role-level settings. Every statement is idempotent, so each run repairs drift,
the password and any `ALTER ROLE ... SET` the role ran on itself included.
"""

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._settings import AppRole, Hints

SCHEMA = "public"
# The runner's bookkeeping: the API reads them (/ready), never writes them.
VERSION_TABLES = ("alembic_version", "alembic_version_history")


class RoleError(GuardError):
    """The app role cannot be set up as configured: one line saying why."""


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def ensure_app_role(conn: Connection, role: AppRole, hints: Hints) -> str:
    """Create or update the app role and its grants; returns what it did."""
    app = role.name
    try:
        return _ensure(conn, role, hints)
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) != "42501":  # insufficient_privilege
            raise
        reason = str(exc.orig).strip().splitlines()[0]
        raise RoleError(
            f"cannot set up the API role {app!r} as {conn.engine.url.username!r} ({reason}): "
            "run migrations as the schema owner with CREATEROLE, or create the role yourself"
        ) from None


def _ensure(conn: Connection, app_role: AppRole, hints: Hints) -> str:
    app = app_role.name
    owner = conn.scalar(text("SELECT current_user"))
    if app == owner:
        raise RoleError(
            f"{hints.app_user_setting} is {app!r}, the schema owner that runs migrations: "
            f"give the API its own role (or unset {hints.app_user_setting})"
        )
    role = conn.execute(
        text("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = :r"),
        {"r": app},
    ).first()
    if role is not None and any(role):
        raise RoleError(
            f"{hints.app_user_setting} {app!r} is a superuser or may create roles or databases: "
            "the API's role must not (ALTER ROLE ... NOSUPERUSER NOCREATEROLE NOCREATEDB)"
        )
    q_app = _quote(conn, app)
    password = app_role.password
    if role is None and password is None:
        raise RoleError(
            f"role {app!r} ({hints.app_user_setting}) does not exist: set "
            f"{hints.app_password_setting} so that migrations create it, or create it yourself"
        )
    database = _quote(conn, conn.scalar(text("SELECT current_database()")))
    if password is not None:  # the runner keeps the role; without, whoever created it does
        # psycopg2 binds the password client-side: utility statements take no parameters.
        verb = "CREATE" if role is None else "ALTER"
        conn.exec_driver_sql(
            f"{verb} ROLE {q_app} WITH LOGIN PASSWORD %(password)s",
            {"password": password},
        )
        # A role may ALTER ROLE itself ... SET (and PASSWORD): it keeps no settings of its own.
        conn.exec_driver_sql(f"ALTER ROLE {q_app} RESET ALL")
        conn.exec_driver_sql(f"ALTER ROLE {q_app} IN DATABASE {database} RESET ALL")
    schema, q_owner = _quote(conn, SCHEMA), _quote(conn, owner)
    dml = "SELECT, INSERT, UPDATE, DELETE"
    for statement in (
        # Temporary tables are DDL too; PUBLIC has TEMPORARY on every new database.
        f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC, {q_app}",
        f"GRANT TEMPORARY ON DATABASE {database} TO {q_owner}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM {q_app}",
        f"GRANT CONNECT ON DATABASE {database} TO {q_app}",
        f"GRANT USAGE ON SCHEMA {schema} TO {q_app}",
        f"GRANT {dml} ON ALL TABLES IN SCHEMA {schema} TO {q_app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {q_app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {q_owner} IN SCHEMA {schema} "
        f"GRANT {dml} ON TABLES TO {q_app}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {q_owner} IN SCHEMA {schema} "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {q_app}",
    ):
        conn.exec_driver_sql(statement)
    for table in VERSION_TABLES:
        if conn.scalar(text("SELECT to_regclass(:t)"), {"t": f"{SCHEMA}.{table}"}):
            conn.exec_driver_sql(
                f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{table} FROM {q_app}"
            )
    if conn.scalar(text("SELECT has_schema_privilege(:r, :s, 'CREATE')"), {"r": app, "s": SCHEMA}):
        raise RoleError(
            f"role {app!r} may create objects in schema {SCHEMA} (PostgreSQL before 15 lets "
            f"everyone): as its owner, REVOKE CREATE ON SCHEMA {SCHEMA} FROM PUBLIC"
        )
    return f"API role {app} {'created' if role is None else 'up to date'}"
