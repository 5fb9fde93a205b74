"""Alembic's Config as the guard's way in: the settings a caller attached, else the
function alembic.ini names; the project's other hooks (a throwaway server, the load)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from alembic.config import Config

from alembic_pg_guard._errors import GuardError
from alembic_pg_guard._settings import GuardSettings, Hints

SECTION = "alembic_pg_guard"
SETTINGS_ATTRIBUTE = "alembic_pg_guard.settings"


def attach(cfg: Config, settings: GuardSettings) -> Config:
    """Hand `settings` to env.py and the guard's commands through `cfg`, with the
    `hint_<field> = ...` lines of alembic.ini's section as their Hints."""
    cfg.attributes[SETTINGS_ATTRIBUTE] = with_ini_hints(cfg, settings)
    return cfg


def with_ini_hints(cfg: Config, settings: GuardSettings) -> GuardSettings:
    given = _ini_hints(cfg)
    return replace(settings, hints=replace(settings.hints, **given)) if given else settings


def hints_of(cfg: Config) -> Hints:
    """The attached settings' hints, else alembic.ini's `hint_*` lines (no settings read)."""
    given = cfg.attributes.get(SETTINGS_ATTRIBUTE)
    return given.hints if given is not None else Hints(**_ini_hints(cfg))


def _ini_hints(cfg: Config) -> dict[str, str]:
    parser = cfg.file_config
    if not parser.has_section(SECTION):
        return {}
    given = {k[5:]: v for k, v in parser.items(SECTION) if k.startswith("hint_")}
    if unknown := sorted(set(given) - {f.name for f in fields(Hints)}):
        names = ", ".join(f"hint_{name}" for name in unknown)
        raise GuardError(f"alembic.ini [{SECTION}] has unknown {names} (see Hints' fields)")
    return given


def option(cfg: Config, name: str) -> str | None:
    value = cfg.get_section_option(SECTION, name) if cfg.file_config.has_section(SECTION) else None
    return value.strip() if value and value.strip() else None


def project_root(cfg: Config) -> Path:
    """alembic.ini's folder (the current one when the Config has no file)."""
    return Path(cfg.config_file_name).resolve().parent if cfg.config_file_name else Path.cwd()


def hook(cfg: Config, name: str) -> Callable[..., Any] | None:
    """The `module:attribute` that alembic.ini's [alembic_pg_guard] names as `name`."""
    spec = option(cfg, name)
    if spec is None:
        return None
    module, _, attribute = spec.partition(":")
    root = str(project_root(cfg))
    if root not in sys.path:  # as alembic's prepend_sys_path = . does for env.py
        sys.path.insert(0, root)
    try:
        found = getattr(importlib.import_module(module), attribute or "main")
    except (ImportError, AttributeError) as exc:
        raise GuardError(f"alembic.ini [{SECTION}] {name} = {spec}: {exc}") from None
    return found


def settings_of(cfg: Config) -> GuardSettings:
    """The attached settings, else those of alembic.ini's `settings` hook (read once),
    else defaults with the URL of DATABASE_URL or sqlalchemy.url."""
    given = cfg.attributes.get(SETTINGS_ATTRIBUTE)
    if given is not None:
        return given
    provider = hook(cfg, "settings")
    if provider is not None:
        settings = provider()
        if not isinstance(settings, GuardSettings):
            raise GuardError(
                f"alembic.ini [{SECTION}] settings = {option(cfg, 'settings')} returned "
                f"{type(settings).__name__}, not GuardSettings"
            )
    else:  # the environment wins, as usual; `alembic init`'s placeholder is no URL
        url = os.environ.get("DATABASE_URL") or cfg.get_main_option("sqlalchemy.url")
        url = None if not url or url.startswith("driver://") else url
        settings = GuardSettings(url=url, no_url="set sqlalchemy.url or DATABASE_URL")
    return attach(cfg, settings).attributes[SETTINGS_ATTRIBUTE]


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """alembic.ini (ALEMBIC_CONFIG, else ./alembic.ini) with an absolute script location."""
    path = Path(path or os.environ.get("ALEMBIC_CONFIG") or "alembic.ini").resolve()
    if not path.is_file():
        raise GuardError(f"no Alembic configuration at {path}: give -c PATH/alembic.ini")
    cfg = Config(str(path))
    location = cfg.get_main_option("script_location")
    if location and not Path(location).is_absolute():
        cfg.set_main_option("script_location", str(path.parent / location))
    return cfg
