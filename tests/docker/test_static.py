"""The Docker files, read without a Docker engine.

The compose file against the Compose specification and the service graph it must keep
(ordering, healthchecks, loopback ports, no inline secrets, scaling); the Dockerfile with
hadolint and against the repository (Python version, COPY sources, layout, commands);
.dockerignore with Docker's own matching rules; what the image leaves out (devtools/,
bench/, tests/, docs/: the developer tooling); docs/docker.md against the compose file.
"""

import ast
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from devtools.embedded_pg import bin_dir
from src.config import PROJECT_ROOT
from tests.docker.compose import (
    COMPOSE_FILE,
    DOCKERFILE,
    IMAGE_ROOT,
    VENV_BIN,
    command_argv,
    context_sources,
    dockerfile_cmd,
    dockerfile_copies,
    dockerfile_healthcheck,
    dockerfile_instructions,
    dockerignore_rules,
    healthcheck_argv,
    ignored,
    interpolate,
    option,
    path_and_parents,
    pattern_regex,
    published_ports,
    repository_files,
    runtime_stage,
)

DOCKER_DOCS = PROJECT_ROOT / "docs" / "docker.md"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY")
# The one Python the Dockerfile builds on: CI's (.ci/run runs on the machine's python3,
# 3.11), so the image runs the version the test suite ran on.
CI_PYTHON = "3.11"
# Developer tooling, the benchmark, the tests, the docs: in the repository, not the image.
NOT_IN_IMAGE = ("devtools", "bench", "tests", "docs")
# Of those, the Python packages: code in the image must not import them.
TOOLING_PACKAGES = ("devtools", "bench", "tests")
# What the image runs, and where each lives in the repository.
IMAGE_PACKAGES = {"src": PROJECT_ROOT, "alembic_pg_guard": PROJECT_ROOT / "alembic-pg-guard"}


# --- the compose file -----------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification():
    proc = subprocess.run(
        [
            str(VENV_BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_interpolates_from_defaults_only(compose):
    """Every `$` in a value is a literal `$$` or a variable with a default (a bare `$host`
    in the proxy's config would silently become an empty string)."""

    def strings(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from strings(value)
        elif isinstance(node, list):
            for item in node:
                yield from strings(item)
        elif isinstance(node, str):
            yield node

    values = list(strings(compose))
    assert any("$$" in value for value in values)  # the walk does reach the values
    for value in values:
        interpolate(value)


def embedded_major_version() -> int:
    version = subprocess.run(
        [str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"\(PostgreSQL\) (\d+)", version).group(1))


def test_db_is_the_embedded_major_version_on_loopback_with_a_named_volume(compose, services):
    db = services["db"]
    image = re.fullmatch(r"postgres:(?P<major>\d+)(?:[.-].*)?", db["image"])
    assert image, f"pin the major version: {db['image']}"
    assert int(image.group("major")) == embedded_major_version()

    assert db["container_name"] == "postgres-alembic-stuff"
    assert published_ports(db) == [("127.0.0.1", "5555", "5432")]

    # PostgreSQL 18+ images declare the volume at /var/lib/postgresql (PGDATA below it).
    mounts = [v.split(":") for v in db["volumes"]]
    assert ["alembic-stuff-data", "/var/lib/postgresql"] in mounts
    volume = compose["volumes"]["alembic-stuff-data"]
    assert volume["name"] == "alembic-stuff-data"
    assert not volume.get("external"), "`docker compose down --volumes` must delete it"
    assert db.get("restart") in ("always", "unless-stopped")


def test_db_uses_the_embedded_clusters_locale(services):
    """Same case mapping as the embedded cluster (devtools/embedded_pg.py initdb), so
    `?q=åland` behaves alike on both."""
    args = services["db"]["environment"]["POSTGRES_INITDB_ARGS"].split()
    assert "--locale-provider=builtin" in args
    assert "--locale=C.UTF-8" in args


def test_db_healthcheck_uses_tcp(services):
    argv = healthcheck_argv(services["db"]["healthcheck"]["test"])
    command = interpolate(" ".join(argv))
    assert "pg_isready" in command
    assert re.search(r"(-h\s*|--host[= ])127\.0\.0\.1\b", command), command


def test_startup_order_db_then_migrate_then_api_then_proxy(services):
    migrate, api, proxy = services["migrate"], services["api"], services["proxy"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert api["depends_on"]["db"] == {"condition": "service_healthy"}
    assert api["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert proxy["depends_on"]["api"] == {"condition": "service_healthy"}

    # One-shot: restarted, it would never "complete" and api would wait forever.
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    for name in ("db", "api", "proxy"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name
        assert services[name]["healthcheck"]["test"], name


def test_migrate_and_api_share_one_image_built_from_the_dockerfile(services):
    migrate, api = services["migrate"], services["api"]
    assert migrate["build"] in (".", {"context": "."})
    assert api["image"] == migrate["image"]
    assert "build" not in api  # built once, by migrate
    assert migrate.get("pull_policy") == "build"
    assert api.get("pull_policy") == "never"


def test_compose_commands_are_the_projects_commands(services):
    pipfile = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())
    assert command_argv(services["migrate"]["command"]) == shlex.split(
        pipfile["scripts"]["migrate"]
    )
    assert command_argv(services["api"]["command"]) == dockerfile_cmd(), (
        "the image's default command (a Kubernetes Deployment's) must be the api service's"
    )
    # The one entry point, whose server options (limits, no banner) come from settings.
    assert dockerfile_cmd() == ["python", "-m", "src.serve"]


def test_api_scales_behind_one_loopback_port(compose, services):
    api, proxy = services["api"], services["proxy"]
    api_port = str(api["environment"]["API_PORT"])
    assert api["environment"]["API_HOST"] == "0.0.0.0"  # reachable from the proxy  # noqa: S104
    image = dict(a.split("=", 1) for k, a in runtime_stage() if k == "ENV" for a in shlex.split(a))
    assert (image["API_HOST"], image["API_PORT"]) == ("0.0.0.0", api_port)  # noqa: S104

    assert "container_name" not in api
    for _, published, _ in published_ports(api):
        assert "-" in published or not published, f"fixed host port {published} on api"
    assert [str(port) for port in api["expose"]] == [api_port]

    ((host_ip, published, target),) = published_ports(proxy)
    assert (host_ip, published) == ("127.0.0.1", "8765")

    (mount,) = proxy["configs"]
    assert mount["target"] == "/etc/nginx/conf.d/default.conf"
    config = interpolate(compose["configs"][mount["source"]]["content"])
    assert re.search(rf"^\s*listen {target};", config, re.M), config
    # Docker's DNS, re-resolved: replicas added by --scale are picked up.
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", config, re.M), config
    upstream = re.search(r"set \$(\w+) http://(\w+):(\d+);", config)
    assert upstream, config
    assert upstream.group(2, 3) == ("api", api_port)
    assert re.search(rf"proxy_pass \${upstream.group(1)};", config), config


def test_no_secrets_in_the_compose_file(services):
    text = COMPOSE_FILE.read_text()
    for env_file in (PROJECT_ROOT / ".env.example", PROJECT_ROOT / ".env"):
        if env_file.exists():
            for key, value in dotenv_values(env_file).items():
                if SECRET_NAME.search(key) and value:
                    assert value not in text, f"{env_file.name}'s {key} is inline"
    for name in ("db", "migrate", "api"):
        service = services[name]
        env_files = service["env_file"]
        assert ".env" in ([env_files] if isinstance(env_files, str) else env_files), name
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            assert not SECRET_NAME.search(key), f"{name}: {key} inline"
            assert not re.search(r"://[^/@]*:[^/@]*@", str(value or "")), f"{name}: {key}"


# --- the Dockerfile and .dockerignore -------------------------------------------------


def test_hadolint_passes_with_no_unexplained_ignores(tmp_path):
    for name in (".hadolint.yaml", ".hadolint.yml"):
        config = PROJECT_ROOT / name
        assert not config.exists() or "ignored" not in config.read_text(), name
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"line {number + 1}: say why on the comment line above the ignore"
            )
    # No user-level config or HADOLINT_* variables may relax the rules.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run(
        [str(VENV_BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def pipfile_python_requirement(value: str) -> SpecifierSet:
    """[requires] python_version as a specifier: pipenv reads a bare "3.11" as that minor
    version (any patch), and takes a specifier such as ">=3.11" as written."""
    value = value.strip()
    return SpecifierSet(f"=={value}.*" if value[:1].isdigit() else value)


@pytest.mark.parametrize(
    ("python_version", "allowed", "refused"),
    [("3.11", "3.11", "3.12"), (">=3.11", "3.13", "3.10"), (">=3.11,<3.13", "3.12", "3.13")],
)
def test_pipfile_python_requirement_reads_both_forms(python_version, allowed, refused):
    requirement = pipfile_python_requirement(python_version)
    assert Version(allowed) in requirement
    assert Version(refused) not in requirement


def test_dockerfile_python_is_cis_and_one_the_pipfile_allows():
    pipfile = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())
    requirement = pipfile_python_requirement(pipfile["requires"]["python_version"])
    instructions = dockerfile_instructions()
    args = dict(a.partition("=")[::2] for keyword, a in instructions if keyword == "ARG")
    version = args["PYTHON_VERSION"]
    assert version == CI_PYTHON, "the image runs the Python the tests ran on"
    assert Version(version) in requirement, f"the Pipfile requires python {requirement}"
    bases = [a.split()[0] for keyword, a in instructions if keyword == "FROM"]
    assert len(bases) >= 2, "multi-stage: build, then a runtime without build tools"
    assert all(base.startswith("python:${PYTHON_VERSION}") for base in bases), bases


def test_dockerfile_installs_the_lock_and_runs_as_a_numeric_non_root_user():
    runs = [a for keyword, a in dockerfile_instructions() if keyword == "RUN"]
    installs = [r for r in runs if "pipenv install" in r or "pipenv sync" in r]
    assert installs and all("--deploy" in r and "--dev" not in r for r in installs), runs
    (user,) = [a for keyword, a in runtime_stage() if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    env = " ".join(a for keyword, a in runtime_stage() if keyword == "ENV")
    assert "PATH=/app/.venv/bin:" in env
    for keyword, arguments in dockerfile_instructions():
        assert not SECRET_NAME.search(arguments), (keyword, arguments)


def test_dockerfile_healthcheck_probes_liveness():
    argv = dockerfile_healthcheck()
    assert any("127.0.0.1:8765/health" in a for a in argv), argv


def test_dockerfile_copies_exist_and_mirror_the_repository_layout():
    """/app is PROJECT_ROOT in the image (src.config derives it from src/'s location)."""
    workdirs = [a for keyword, a in runtime_stage() if keyword == "WORKDIR"]
    assert workdirs[-1] == IMAGE_ROOT
    copied = set()
    for flags, sources, destination in dockerfile_copies():
        if "from" in flags:
            assert sources == [destination] == ["/app/.venv"], (flags, sources)
            continue
        for source in sources:
            assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not re.search(r"(^|/)\.env", source), source
            copied.add(source)
        if len(sources) == 1 and not destination.endswith("/"):
            target = posixpath.normpath(posixpath.join(IMAGE_ROOT, destination))
            assert target == posixpath.join(IMAGE_ROOT, sources[0]), (sources, destination)
    assert {"src", "alembic", "alembic.ini", "Pipfile", "Pipfile.lock"} <= copied


def test_dockerignore_keeps_out_secrets_and_local_state_but_not_what_is_copied():
    rules = dockerignore_rules()
    for path in (
        ".env",
        ".env.local",
        "src/.env",
        ".pgdata",
        ".pgdata/PG_VERSION",
        ".pgdata.log",
        ".venv",
        ".venv/bin/python",
        "src/__pycache__",
        "src/__pycache__/main.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".ruff_cache/0.1/x",
        ".git/config",
    ):
        assert ignored(path, rules), f"{path} would reach the build context"

    sources = context_sources()
    for source in sources:
        assert not ignored(source, rules), f"COPY {source} is excluded by .dockerignore"
    for path in repository_files():
        copied = any(path == s or path.startswith(f"{s}/") for s in sources)
        assert ignored(path, rules) != copied, (
            f"{path}: {'excluded though COPYd' if copied else 'in the context, never COPYd'}"
        )


# --- what the image leaves out: the developer tooling ---------------------------------


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(f"{folder}/")


def test_no_copy_takes_in_a_tooling_folder():
    """No COPY source is, is inside, or contains (`.`, a glob) devtools/, bench/, tests/
    or docs/; and the Pipfile installs no project path into the image's venv but the
    guard's, whose code the runtime stage copies where the editable install points."""
    files = repository_files()
    for name in NOT_IN_IMAGE:
        paths = [name, f"{name}/__init__.py", *(f for f in files if under(f, name))]
        for source in context_sources():
            normalized = posixpath.normpath(source).lstrip("/")
            assert normalized != ".", f"COPY {source}: the whole context, {name}/ too"
            assert not under(normalized, name), f"COPY {source}: inside {name}/"
            regex = pattern_regex(normalized)
            for path in paths:
                assert not any(regex.fullmatch(p) for p in path_and_parents(path)), (
                    f"COPY {source} takes in {path}"
                )
    packages = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["packages"]
    local = {p: s for p, s in packages.items() if isinstance(s, dict) and {"path", "file"} & set(s)}
    assert local == {"alembic-pg-guard": {"path": "./alembic-pg-guard", "editable": True}}, local
    copied = {posixpath.normpath(s) for s in context_sources(runtime_stage())}
    assert "alembic-pg-guard/alembic_pg_guard" in copied, copied


def test_dockerignore_keeps_the_tooling_folders_out_of_the_build_context():
    rules = dockerignore_rules()
    files = repository_files()
    for name in NOT_IN_IMAGE:
        # The folder, a file that may appear in it later, and every file it has now.
        paths = [name, f"{name}/", f"{name}/new_module.py"]
        paths += [f for f in files if under(f, name)]
        for path in paths:
            assert ignored(path.rstrip("/"), rules), f"{path} would reach the build context"
    for name in TOOLING_PACKAGES:
        assert any(under(f, name) for f in files), f"no files under {name}/: nothing checked"


def image_python_files() -> list[Path]:
    """The Python files the runtime stage COPYs from the context (src/, alembic/, the guard)."""
    rules = dockerignore_rules()
    files = []
    for source in context_sources(runtime_stage()):
        root = PROJECT_ROOT / source
        candidates = root.rglob("*.py") if root.is_dir() else [root]
        for path in candidates:
            relative = path.relative_to(PROJECT_ROOT).as_posix()
            if path.suffix == ".py" and not ignored(relative, rules):
                files.append(path)
    return sorted(files)


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for each absolute import, and each importlib.import_module or
    __import__ call with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            name = getattr(function, "attr", None) or getattr(function, "id", None)
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    yield node.lineno, first.value


def tooling_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {module}"
        for line, module in imported_modules(tree)
        if module.split(".")[0] in TOOLING_PACKAGES
    ]


def test_tooling_imports_are_found():
    """The scanner sees every form of import the image's code could use."""
    code = (
        "import os, devtools.start\n"
        "from bench import run\n"
        "from tests.helpers import wait_for\n"
        "import importlib\n"
        "importlib.import_module('devtools.embedded_pg')\n"
        "__import__('bench.run')\n"
        "from . import devtools\n"  # relative: src.devtools, not the tooling
        "from src import devtools_like\n"
    )
    found = [module for _, module in imported_modules(ast.parse(code))]
    tooling = [m for m in found if m.split(".")[0] in TOOLING_PACKAGES]
    assert tooling == [
        "devtools.start",
        "bench",
        "tests.helpers",
        "devtools.embedded_pg",
        "bench.run",
    ]


def test_code_in_the_image_imports_no_tooling_package():
    """src/ (and alembic/ and the guard, which `migrate` runs) import nothing from devtools,
    bench or tests: none of them is in the image."""
    files = image_python_files()
    names = {path.relative_to(PROJECT_ROOT).as_posix() for path in files}
    runner = "alembic-pg-guard/alembic_pg_guard/_runner.py"
    assert {"src/main.py", runner, "alembic/env.py"} <= names, names
    problems = [problem for path in files for problem in tooling_imports(path)]
    assert not problems, "\n".join(problems)


def entry_modules(argv: list[str]) -> list[str]:
    """The Python modules a container command runs: `python -m MODULE`, or the
    `MODULE:ATTRIBUTE` an ASGI server loads. Any other program is refused."""
    program = posixpath.basename(argv[0])
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        assert "-c" not in argv, f"inline code instead of a module: {argv}"
        return [option(argv, "-m")]
    if program in ("uvicorn", "gunicorn", "hypercorn"):
        specs = [a for a in argv[1:] if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", a)]
        assert len(specs) == 1, f"one MODULE:ATTRIBUTE expected: {argv}"
        return [specs[0].partition(":")[0]]
    raise AssertionError(f"{argv}: not a module run by python or uvicorn")


def module_file(module: str) -> Path | None:
    root = IMAGE_PACKAGES.get(module.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if path.is_file():
            return path
    return None


def test_entry_modules_refuses_what_is_not_a_module_under_a_known_runner():
    assert entry_modules(["python", "-m", "alembic_pg_guard", "migrate"]) == ["alembic_pg_guard"]
    assert entry_modules(["uvicorn", "src.main:app", "--port", "1"]) == ["src.main"]
    for argv in (["pipenv", "run", "start"], ["python", "-c", "import devtools"]):
        with pytest.raises(AssertionError):
            entry_modules(argv)


def test_image_commands_run_only_modules_under_src(services):
    """The image's CMD and the commands compose runs in it load modules under src/ or the
    guard's (in the image), never devtools (`pipenv run start`) or anything else."""
    migrate_image = services["migrate"]["image"]
    commands = {"Dockerfile CMD": dockerfile_cmd()}
    assert not [k for k, _ in runtime_stage() if k == "ENTRYPOINT"], "commands run as given"
    for name, service in services.items():
        if service.get("image") == migrate_image or "build" in service:
            command = service.get("command")  # none: the image's CMD
            commands[f"{name}'s command"] = command_argv(command) if command else dockerfile_cmd()
    assert {"migrate's command", "api's command"} <= set(commands), commands
    copied = [posixpath.normpath(source) for source in context_sources(runtime_stage())]
    for where, argv in commands.items():
        assert argv, f"{where}: empty"
        for module in entry_modules(argv):
            top = module.split(".")[0]
            assert top in IMAGE_PACKAGES, f"{where}: {module} is not under src or the guard"
            path = module_file(module)
            assert path, f"{where}: {module} is not a module in the repository"
            relative = path.relative_to(PROJECT_ROOT).as_posix()
            assert any(s == "." or under(relative, s) for s in copied), (
                f"{where}: {relative} not COPYd"
            )

    # The healthchecks run inline code: the standard library only.
    for argv in (
        dockerfile_healthcheck(),
        healthcheck_argv(services["api"]["healthcheck"]["test"]),
    ):
        if posixpath.basename(argv[0]).startswith("python"):
            tree = ast.parse(option(argv, "-c"))
            for _, module in imported_modules(tree):
                assert module.split(".")[0] in sys.stdlib_module_names, (argv, module)


# --- docs/docker.md -------------------------------------------------------------------


def test_docker_docs_match_the_compose_file(compose, services):
    assert DOCKER_DOCS.exists(), "the Docker documentation lives in docs/docker.md"
    text = DOCKER_DOCS.read_text()
    described = set(re.findall(r"^- `([\w-]+)`:", text, re.M))
    assert described == set(services), "one bullet per compose service"

    images = set(re.findall(r"\bpostgres:\d+\b", text))
    assert images == {services["db"]["image"]}, f"docs name {images}"
    expected = [f"`{volume['name']}`" for volume in compose["volumes"].values()]
    for service in services.values():
        if "container_name" in service:
            expected.append(f"`{service['container_name']}`")
        expected += [f"`{ip}:{port}`" for ip, port, _ in published_ports(service)]
    for fact in expected:
        assert fact in text, f"docs/docker.md does not say {fact}"

    published = {f"{ip}:{port}" for s in services.values() for ip, port, _ in published_ports(s)}
    for address in re.findall(r"127\.0\.0\.1:\d+", text):
        assert address in published, f"docs mention {address}, compose does not publish it"

    for fact in (
        f"`{' '.join(command_argv(services['migrate']['command']))}`",
        "docker compose up --scale api=",
        "docker compose down --volumes",
        "tests/migrations/test_racing_migrators.py",
    ):
        assert fact in text, f"docs/docker.md does not say {fact}"
    # Every repository path it names exists (files move: tests/test_docker.py is gone).
    for path in re.findall(r"`((?:src|tests|devtools|bench|alembic|docs)/[\w./-]*)`", text):
        assert (PROJECT_ROOT / path).exists(), f"docs/docker.md names {path}: no such path"


def test_pgbouncer_is_an_opt_in_pooler_for_the_api_only(services):
    bouncer = services["pgbouncer"]
    assert bouncer["profiles"] == ["pgbouncer"]  # `docker compose up` alone never starts it
    assert re.fullmatch(r"edoburu/pgbouncer:v\d+\.\d+\.\d+-p\d+", bouncer["image"])
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    assert interpolate(bouncer["environment"]["DB_HOST"]) == "db"
    api = services["api"]
    assert interpolate(api["environment"]["APP_DATABASE_URL"]) == ""  # off unless asked
    assert interpolate(api["environment"]["DB_TRANSACTION_POOLER"]) == "false"
    assert api["depends_on"]["pgbouncer"]["required"] is False
    assert "APP_DATABASE_URL" not in services["migrate"]["environment"]  # migrations: direct
