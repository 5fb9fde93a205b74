"""_settings.py: a database URL the guard cannot use is one line that never shows its
password (it is in the URL)."""

import pytest
from alembic_pg_guard import GuardError, GuardSettings

SECRET = "Zq9Secret@Pw_7731"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        # An unencoded '@': SQLAlchemy (and libpq) end the password at the first one.
        (f"postgresql://user:{SECRET}@127.0.0.1:5602/db", "percent-encode it as %40"),
        (f"postgresql://user:{SECRET.replace('@', '')}@127.0.0.1:no-port/db", "not one like"),
    ],
)
def test_a_bad_database_url_never_shows_its_password(url: str, problem: str):
    with pytest.raises(GuardError, match=problem) as refused:
        GuardSettings(url=url)
    for part in SECRET.split("@"):
        assert part not in str(refused.value)
