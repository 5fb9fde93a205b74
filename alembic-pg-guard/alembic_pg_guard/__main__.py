"""The command line: `python -m alembic_pg_guard [-c alembic.ini] COMMAND` (or
`alembic-pg-guard COMMAND`). Every failure is one `error:` line on stderr, exit 1."""

from __future__ import annotations

import argparse
import sys

from alembic_pg_guard._config import load_config
from alembic_pg_guard._errors import fail_on_errors
from alembic_pg_guard._gates import GATES, check
from alembic_pg_guard._runner import upgrade


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alembic-pg-guard",
        description="Locked, time-limited, history-checked and gated Alembic migrations "
        "for PostgreSQL.",
    )
    p.add_argument("-c", "--config", help="alembic.ini (default: ALEMBIC_CONFIG, ./alembic.ini)")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("migrate", help="the locked runner: upgrade to head (or --target)")
    run.add_argument("--target", default="head", help="revision to upgrade to (default: head)")
    commands.add_parser(
        "verify",
        help="the database matches the models at head: accept its stamped or edited revisions",
    )
    gates = commands.add_parser("check", help="the migration gates: " + ", ".join(GATES))
    gates.add_argument("gate", choices=[*GATES, "all"])
    gates.add_argument(
        "--configured-db",
        action="store_true",
        help="drift: on the settings' gate_url, else their url (upgraded to head), instead "
        "of a throwaway database",
    )
    gates.add_argument("--scratch-url", help="a server where the gates may CREATE DATABASE")
    compat = commands.add_parser("compat", help="the previous release's tests on the new head")
    compat.add_argument("--base", metavar="REF", help="git ref of the old code")
    compat.add_argument("--scratch-url", help="a server where it may CREATE DATABASE")
    commands.add_parser(  # its own options: `rehearse --help`
        "rehearse", help="pending revisions on a big throwaway copy under load", add_help=False
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, rest = p.parse_known_args(argv)
    if rest and args.command != "rehearse":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    with fail_on_errors():
        cfg = load_config(args.config)
        if args.command == "migrate":
            print(upgrade(cfg, args.target))
        elif args.command == "verify":
            from alembic_pg_guard._verify import verify

            print(verify(cfg))
        elif args.command == "check":
            check(cfg, args.gate, configured_db=args.configured_db, scratch_url=args.scratch_url)
        elif args.command == "compat":
            from alembic_pg_guard._compat import run as compat

            print(compat(cfg, args.base, scratch_url=args.scratch_url))
        elif "--rolling" in rest:
            from alembic_pg_guard._rehearse.rolling import main as rolling

            return rolling(cfg, [arg for arg in rest if arg != "--rolling"])
        else:
            from alembic_pg_guard._rehearse.run import main as rehearse

            return rehearse(cfg, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
