"""The Docker files, checked without a Docker engine.

Statically: the compose file against the Compose specification and the service graph
it must keep (ordering, healthchecks, loopback ports, no inline secrets, scaling), the
Dockerfile with hadolint and against the repository (Python version, COPY sources,
layout), .dockerignore with Docker's own matching rules, and the README's Docker section
against the compose file. Dynamically: the exact `migrate` and `api` commands and
healthchecks read from docker-compose.yml and the Dockerfile, run here against an
embedded PostgreSQL with the environment compose would give them.
"""

import json
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from devtools.embedded_pg import EmbeddedPostgres, bin_dir, cluster_in, free_port
from src.config import PROJECT_ROOT, Settings
from src.migrate import alembic_config, head_revisions
from tests.conftest import wait_for

VENV_BIN = Path(sys.executable).parent  # the container has /app/.venv/bin first on PATH
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"


# --- reading the files --------------------------------------------------------------


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str) -> str:
    """Compose's interpolation, with every variable at its default: `$$` is a literal `$`;
    `${VAR:-default}` gives the default; a variable without a default is an error (the
    file must not depend on what a given .env happens to define)."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group("braced") or match.group("bare")
        default = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*:?-(?P<default>.*)", expression)
        assert default, f"{match.group(0)!r} has no default (write $$ for a literal $)"
        return default.group("default")

    return _VARIABLE.sub(substitute, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, host_port or range, container_port) for each `ports` entry."""
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            host_ip, published = entry.get("host_ip", ""), str(entry.get("published", ""))
            result.append((host_ip, published, str(entry["target"])))
            continue
        parts = interpolate(str(entry)).split("/")[0].split(":")
        parts = ["", "", *parts][-3:]
        result.append((parts[0], parts[1], parts[2]))
    return result


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """A compose/Dockerfile healthcheck `test` as the argv the engine runs."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), test
    return rest if kind == "CMD" else ["/bin/sh", "-c", *rest]


def command_argv(command: list[str] | str) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def with_option(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(name) + 1] = value
    return argv


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image is."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list), arguments
    return argv


def dockerfile_copies() -> list[tuple[dict[str, str], list[str], str]]:
    """(flags, sources, destination) for each COPY/ADD."""
    copies = []
    for keyword, arguments in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        flag_words, rest = re.fullmatch(r"((?:--\S+\s+)*)(.*)", arguments).groups()
        flags = dict(word[2:].partition("=")[::2] for word in flag_words.split())
        words = exec_form(rest) if rest.startswith("[") else shlex.split(rest)
        copies.append((flags, words[:-1], words[-1]))
    return copies


def dockerfile_healthcheck() -> list[str]:
    (arguments,) = [a for keyword, a in runtime_stage() if keyword == "HEALTHCHECK"]
    return exec_form(arguments[arguments.index("CMD ") + 4 :])


# --- .dockerignore, with the semantics of moby/patternmatcher -------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end
        elif char == "\\":
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(char)
        i += 1
    return re.compile(regex)


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception `!`, pattern), in file order."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves `path` (relative, posix) out of the build context: the last
    rule matching it or one of its parent folders wins."""
    parts = path.split("/")
    candidates = [path, *("/".join(parts[: i + 1]) for i in range(len(parts) - 1))]
    excluded = False
    for exception, regex in rules:
        if exception != excluded:
            continue  # only an exception can re-include, only a pattern can exclude
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


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
    (cmd,) = [arguments for keyword, arguments in runtime_stage() if keyword == "CMD"]
    assert command_argv(services["api"]["command"]) == exec_form(cmd), (
        "the image's default command (a Kubernetes Deployment's) must be the api service's"
    )


def test_api_scales_behind_one_loopback_port(compose, services):
    api, proxy = services["api"], services["proxy"]
    api_argv = command_argv(api["command"])
    api_port = option(api_argv, "--port")
    assert option(api_argv, "--host") == "0.0.0.0"  # reachable from the proxy  # noqa: S104

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


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY")


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


# --- the compose services' commands, run here -----------------------------------------


def container_env(service: dict, services: dict, pg: EmbeddedPostgres) -> dict[str, str]:
    """What compose gives the service's container, with `db` at the embedded cluster:
    the image's PATH, .env (env_file: .env.example's values, this cluster's credentials),
    then the service's `environment`, then db:5432 mapped to where the cluster listens."""
    settings_keys = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in settings_keys}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.update({k: v for k, v in dotenv_values(PROJECT_ROOT / ".env.example").items() if v})
    env.update(POSTGRES_USER=pg.user, POSTGRES_PASSWORD=pg.password, POSTGRES_DB=pg.database)
    env.update({k: interpolate(str(v)) for k, v in service.get("environment", {}).items()})

    assert env["POSTGRES_HOST"] == "db" and "db" in services
    ((_, _, db_port),) = published_ports(services["db"])
    assert env["POSTGRES_PORT"] == db_port
    env.update(POSTGRES_HOST=pg.host, POSTGRES_PORT=str(pg.port))
    return env


def run(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def on_port(argv: list[str], port: int) -> list[str]:
    """A healthcheck argv probing `port` instead of the container's 8765."""
    replaced = [re.sub(r"(127\.0\.0\.1|localhost):8765\b", f"127.0.0.1:{port}", a) for a in argv]
    assert replaced != argv, argv
    return replaced


def test_migrate_then_api_commands_run_as_compose_runs_them(services, cluster_root):
    pg = cluster_in(cluster_root)
    pg.start()
    try:
        migrate = command_argv(services["migrate"]["command"])
        env = container_env(services["migrate"], services, pg)
        heads = ", ".join(sorted(head_revisions(alembic_config())))

        first = run(migrate, env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"upgraded from empty to {heads}" in first.stdout
        again = run(migrate, env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"already at head ({heads})" in again.stdout

        api_service = services["api"]
        env = container_env(api_service, services, pg)
        port = free_port()
        api = command_argv(api_service["command"])
        api = with_option(with_option(api, "--host", "127.0.0.1"), "--port", str(port))
        health_checks = [
            on_port(healthcheck_argv(api_service["healthcheck"]["test"]), port),
            on_port(dockerfile_healthcheck(), port),
        ]
        proc = subprocess.Popen(
            api,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_for(f"{base}/health", proc, seconds=60).status_code == 200
            ready = httpx.get(f"{base}/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "revision": heads}
            for check in health_checks:
                result = run(check, env)
                assert result.returncode == 0, (check, result.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        # A graceful stop (uvicorn re-raises the SIGTERM it handled: 143 in a container).
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert "Finished server process" in output, output
        for check in health_checks:  # and they do fail when nothing answers
            assert run(check, env).returncode != 0, check
    finally:
        pg.destroy()


def test_db_healthcheck_fails_on_the_init_servers_socket_and_passes_over_tcp(
    services, cluster_root
):
    """The postgres image initialises through a temporary server on the unix socket only
    (listen_addresses=''); depending services must not start against that one."""
    pg = cluster_in(cluster_root, user="alembic-stuff", database="alembic-stuff")
    argv = healthcheck_argv(services["db"]["healthcheck"]["test"])
    argv = [interpolate(re.sub(r"(-p\s*|--port[= ])5432\b", rf"\g<1>{pg.port}", a)) for a in argv]
    env = {
        **os.environ,
        "PATH": f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "POSTGRES_USER": pg.user,
        "POSTGRES_DB": pg.database,
        "PGPORT": str(pg.port),
    }
    pg.init()
    try:
        data = socket_dir = str(pg.data_dir)  # the socket goes where the server may write
        options = f"-c listen_addresses='' -p {pg.port} -c unix_socket_directories={socket_dir}"
        log = str(pg.data_dir / "socket-only.log")
        pg._pg("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", log, "-o", options)
        env["PGHOST"] = socket_dir  # libpq's default socket, as in the image
        socket_only = run(["pg_isready", "-p", str(pg.port)], env)
        assert socket_only.returncode == 0, socket_only.stdout  # the server is up...
        assert run(argv, env).returncode != 0  # ...and the healthcheck does not pass
        pg.stop()

        pg.start()  # the real server: 127.0.0.1 over TCP
        result = run(argv, env)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        pg.destroy()


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
    proc = run([str(VENV_BIN / "hadolint"), "--no-color", str(DOCKERFILE)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_python_version_matches_the_pipfile():
    pipfile = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())
    instructions = dockerfile_instructions()
    args = dict(a.partition("=")[::2] for keyword, a in instructions if keyword == "ARG")
    assert args["PYTHON_VERSION"] == pipfile["requires"]["python_version"]
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
    assert workdirs[-1] == "/app"
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
            target = posixpath.normpath(posixpath.join("/app", destination))
            assert target == posixpath.join("/app", sources[0]), (sources, destination)
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
        "tests/test_docker.py",
    ):
        assert ignored(path, rules), f"{path} would reach the build context"

    sources = {s for flags, ss, _ in dockerfile_copies() if "from" not in flags for s in ss}
    for source in sources:
        assert not ignored(source, rules), f"COPY {source} is excluded by .dockerignore"
    for path in tracked_files():
        copied = any(path == s or path.startswith(f"{s}/") for s in sources)
        assert ignored(path, rules) != copied, (
            f"{path}: {'excluded though COPYd' if copied else 'in the context, never COPYd'}"
        )


# --- the README -----------------------------------------------------------------------


def readme_docker_section() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = re.search(r"^## With Docker\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "README.md has no '## With Docker' section"
    return section.group(1)


def test_readme_docker_section_matches_the_compose_file(compose, services):
    text = readme_docker_section()
    described = set(re.findall(r"^- `([\w-]+)`:", text, re.M))
    assert described == set(services), "one README bullet per compose service"

    assert set(re.findall(r"\bpostgres:\d+\b", text)) == {services["db"]["image"]}
    for service in services.values():
        if "container_name" in service:
            assert f"`{service['container_name']}`" in text
        for host_ip, published, _ in published_ports(service):
            assert f"`{host_ip}:{published}`" in text
    for volume in compose["volumes"].values():
        assert f"`{volume['name']}`" in text

    published = {f"{ip}:{port}" for s in services.values() for ip, port, _ in published_ports(s)}
    for address in re.findall(r"127\.0\.0\.1:\d+", text):
        assert address in published, f"README mentions {address}, compose does not publish it"

    assert f"`{' '.join(command_argv(services['migrate']['command']))}`" in text
    assert "docker compose up --scale api=" in text
    assert "docker compose down --volumes" in text
    for path in re.findall(r"`(src/[\w/]+\.py)`", text):
        assert (PROJECT_ROOT / path).exists(), path
    assert "tests/test_migration_safety.py" in text
