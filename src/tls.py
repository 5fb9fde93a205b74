"""TLS to PostgreSQL in libpq's terms (sslmode, sslrootcert, ...): psycopg2 takes them as
they are; asyncpg gets the `ssl` argument that verifies as libpq would (docs/production.md)."""

import ssl
from typing import Literal

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: tuple[str, ...] = SslMode.__args__  # type: ignore[attr-defined]
LIBPQ_TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def asyncpg_ssl(params: dict[str, str]) -> bool | str | ssl.SSLContext | None:
    """asyncpg's `ssl` argument for libpq's TLS parameters (None: asyncpg's default)."""
    if not params:
        return None
    mode = params.get("sslmode", "prefer")
    rootcert, cert = params.get("sslrootcert"), params.get("sslcert")
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode  # asyncpg falls back to plain text when the server has no TLS
    if mode == "require" and not rootcert:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # libpq's require: encrypted, not verified
    else:
        # verify-ca / verify-full, or require with a root certificate (libpq then verifies
        # the chain, as verify-ca does). Without sslrootcert: the system's CAs.
        context = ssl.create_default_context(cafile=rootcert)
        context.check_hostname = mode == "verify-full"
    if cert:
        context.load_cert_chain(cert, params.get("sslkey"))
    return context
